/** CSI errors carry a gRPC status code; the server maps them once (server.ts). */
import { status } from '@grpc/grpc-js';

export type CsiCode = 'InvalidArgument' | 'NotFound' | 'AlreadyExists' | 'FailedPrecondition' | 'ResourceExhausted'
  | 'OutOfRange' | 'Aborted' | 'Unavailable' | 'Internal' | 'Unimplemented';

const GRPC: Record<CsiCode, status> = {
  InvalidArgument: status.INVALID_ARGUMENT,
  NotFound: status.NOT_FOUND,
  AlreadyExists: status.ALREADY_EXISTS,
  FailedPrecondition: status.FAILED_PRECONDITION,
  ResourceExhausted: status.RESOURCE_EXHAUSTED,
  OutOfRange: status.OUT_OF_RANGE,
  Aborted: status.ABORTED,
  Unavailable: status.UNAVAILABLE,
  Internal: status.INTERNAL,
  Unimplemented: status.UNIMPLEMENTED,
};

export class CsiError extends Error {
  constructor(readonly code: CsiCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CsiError';
  }

  get grpcCode(): status {
    return GRPC[this.code];
  }
}

export function isCsiError(e: unknown, code?: CsiCode): e is CsiError {
  return e instanceof CsiError && (code === undefined || e.code === code);
}

export const invalid = (message: string): CsiError => new CsiError('InvalidArgument', message);
