import type { FastifyReply } from 'fastify';

/**
 * Stable error codes of the admin API, one registry (after fastify's lib/errors.js). Each code
 * has one HTTP status and title; responses are RFC 9457 problem documents whose `type` names
 * the code, so clients can branch on it without parsing prose.
 */
export const PROBLEMS = {
  UNAUTHENTICATED: { status: 401, title: 'Authentication required' },
  FORBIDDEN: { status: 403, title: 'Not allowed for this role' },
  NOT_FOUND: { status: 404, title: 'Not found' },
  ROUTE_NOT_FOUND: { status: 404, title: 'No such endpoint' },
  INVALID_REQUEST: { status: 400, title: 'Invalid request' },
  MALFORMED_JSON: { status: 400, title: 'Malformed JSON body' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'Unsupported content type' },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'Request body too large' },
  CONFLICT: { status: 409, title: 'Conflict' },
  RATE_LIMITED: { status: 429, title: 'Too many requests' },
  UNAVAILABLE: { status: 503, title: 'Dependency unavailable' },
  INTERNAL: { status: 500, title: 'Internal error' },
} as const;

export type ProblemCode = keyof typeof PROBLEMS;

export class ProblemError extends Error {
  readonly code: ProblemCode;
  readonly extra: Record<string, unknown> | undefined;
  constructor(code: ProblemCode, detail: string, extra?: Record<string, unknown>) {
    super(detail);
    this.name = 'ProblemError';
    this.code = code;
    this.extra = extra;
  }
}

export function sendProblem(reply: FastifyReply, code: ProblemCode, detail: string, extra?: Record<string, unknown>): FastifyReply {
  const p = PROBLEMS[code];
  return reply
    .code(p.status)
    .type('application/problem+json')
    .send({ type: `urn:lockstep:problem:${code.toLowerCase().replaceAll('_', '-')}`, title: p.title, status: p.status, detail, instance: reply.request.url, ...extra });
}

/** Maps fastify's own errors (body parsing, limits) onto the registry. */
export function problemFromFastifyError(err: { code?: string; statusCode?: number; message: string }): { code: ProblemCode; detail: string } {
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { code: 'MALFORMED_JSON', detail: err.message };
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { code: 'PAYLOAD_TOO_LARGE', detail: err.message };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { code: 'UNSUPPORTED_MEDIA_TYPE', detail: 'send application/json' };
    case 'FST_ERR_VALIDATION':
      return { code: 'INVALID_REQUEST', detail: err.message };
  }
  if (err.statusCode === 400 || (err as { validation?: unknown }).validation) return { code: 'INVALID_REQUEST', detail: err.message };
  if (err.statusCode === 413) return { code: 'PAYLOAD_TOO_LARGE', detail: err.message };
  if (err.statusCode === 415) return { code: 'UNSUPPORTED_MEDIA_TYPE', detail: err.message };
  return { code: 'INTERNAL', detail: 'internal error; see the server log' };
}
