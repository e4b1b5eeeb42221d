/** Operator errors with stable codes; API errors are mapped once, here. */
export type OperatorErrorCode =
  | 'OP_NOT_FOUND'
  | 'OP_CONFLICT'
  | 'OP_INVALID'
  | 'OP_FORBIDDEN'
  | 'OP_TRANSIENT'
  | 'OP_ENGINE'
  | 'OP_REFUSED';

export class OperatorError extends Error {
  constructor(readonly code: OperatorErrorCode, message: string, readonly status = 0, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OperatorError';
  }
}

export function isOperatorError(e: unknown, code?: OperatorErrorCode): e is OperatorError {
  return e instanceof OperatorError && (code === undefined || e.code === code);
}

export function fromStatus(status: number, message: string): OperatorError {
  if (status === 404) return new OperatorError('OP_NOT_FOUND', message, status);
  if (status === 409) return new OperatorError('OP_CONFLICT', message, status);
  if (status === 400 || status === 422) return new OperatorError('OP_INVALID', message, status);
  if (status === 401 || status === 403) return new OperatorError('OP_FORBIDDEN', message, status);
  return new OperatorError('OP_TRANSIENT', message, status);
}
