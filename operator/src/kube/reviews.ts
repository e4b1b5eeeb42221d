/**
 * The API server's own answers to "who is this token?" (TokenReview) and "may this user do that?"
 * (SubjectAccessReview), so the operator's metrics listener trusts exactly what the cluster's authenticator
 * and authorizer say. Both are create-only, cluster-scoped calls (the chart grants them).
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { rawRequest } from './raw.js';

/** Who a token belongs to, as the API server's authenticator reports it. */
export interface ReviewedUser {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

/** The two questions the metrics listener asks; a fake answers them in unit tests. */
export interface ReviewClient {
  /** The user the token authenticates as, or null when the API server does not accept the token. */
  authenticate(token: string): Promise<ReviewedUser | null>;
  /** Whether `user` may use `verb` on the non-resource URL `path` (e.g. get /metrics). */
  authorizeNonResource(user: ReviewedUser, verb: string, path: string): Promise<boolean>;
}

interface TokenReviewStatus {
  status?: { authenticated?: boolean; user?: ReviewedUser; error?: string };
}
interface AccessReviewStatus {
  status?: { allowed?: boolean; denied?: boolean };
}

/** A review that takes longer than this fails (the scraper gets 503) rather than holding a slot. */
const REVIEW_TIMEOUT_MS = 5000;

export class KubeReviews implements ReviewClient {
  constructor(private readonly kc: KubeConfig) {}

  async authenticate(token: string): Promise<ReviewedUser | null> {
    const r = await rawRequest<TokenReviewStatus>(this.kc, {
      method: 'POST', path: '/apis/authentication.k8s.io/v1/tokenreviews', timeoutMs: REVIEW_TIMEOUT_MS,
      // No audiences: the API server checks the token against its own (a ServiceAccount token made for it).
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token } },
    });
    const user = r.status?.user;
    return r.status?.authenticated === true && user?.username ? user : null;
  }

  async authorizeNonResource(user: ReviewedUser, verb: string, path: string): Promise<boolean> {
    const r = await rawRequest<AccessReviewStatus>(this.kc, {
      method: 'POST', path: '/apis/authorization.k8s.io/v1/subjectaccessreviews', timeoutMs: REVIEW_TIMEOUT_MS,
      body: {
        apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview',
        spec: {
          user: user.username, uid: user.uid, groups: user.groups ?? [], extra: user.extra ?? {},
          nonResourceAttributes: { path, verb },
        },
      },
    });
    return r.status?.allowed === true && r.status.denied !== true;
  }
}
