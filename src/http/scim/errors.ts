import type { FastifyReply } from 'fastify';
import SCIMMY from 'scimmy';
import { ConflictError, FilterError, NotFoundError, UnknownMemberError } from '../../store/identities.ts';

/** Every SCIM response, errors included, is sent with this type (RFC 7644 §8.1). */
export const SCIM_CONTENT_TYPE = 'application/scim+json; charset=utf-8';
export const ERROR_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:Error';

export type ScimType =
  | 'uniqueness'
  | 'tooMany'
  | 'invalidFilter'
  | 'mutability'
  | 'invalidSyntax'
  | 'invalidPath'
  | 'noTarget'
  | 'invalidValue'
  | 'invalidVers'
  | 'sensitive';

export interface ScimErrorBody {
  schemas: [typeof ERROR_SCHEMA];
  status: string;
  scimType?: ScimType;
  detail: string;
}

/**
 * An error raised by our own code with its SCIM shape already decided. Status codes scimmy's
 * ErrorResponse refuses (412, 415, 429) are allowed here, so every error goes through one path.
 */
export class ScimHttpError extends Error {
  readonly status: number;
  readonly scimType: ScimType | undefined;
  readonly headers: Record<string, string>;

  constructor(status: number, scimType: ScimType | undefined, detail: string, headers: Record<string, string> = {}, options?: ErrorOptions) {
    super(detail, options);
    this.name = 'ScimHttpError';
    this.status = status;
    this.scimType = scimType;
    this.headers = headers;
  }
}

/** Errors of the identity store, as SCIM errors. */
function storeError(err: unknown): ScimHttpError | undefined {
  if (err instanceof ConflictError)
    return err.kind === 'uniqueness'
      ? new ScimHttpError(409, 'uniqueness', err.message)
      : new ScimHttpError(409, undefined, `${err.message}; retry the request`);
  if (err instanceof UnknownMemberError) return new ScimHttpError(400, 'invalidValue', err.message);
  if (err instanceof FilterError) return new ScimHttpError(400, 'invalidFilter', err.message);
  if (err instanceof NotFoundError) return new ScimHttpError(404, undefined, err.message);
  return undefined;
}

interface FastifyishError {
  code?: string;
  statusCode?: number;
  message?: string;
}

/** Maps any error to a SCIM error body and HTTP status; never leaks internals of 5xx errors. */
export function scimError(err: unknown): { status: number; body: ScimErrorBody; headers: Record<string, string> } {
  if (err instanceof ScimHttpError) return build(err.status, err.scimType, err.message, err.headers);
  if (err instanceof SCIMMY.Types.Error) {
    const e = err as Error & { status: number; scimType?: string | null };
    const status = Number(e.status) || 500;
    return build(status, (e.scimType ?? undefined) as ScimType | undefined, status >= 500 ? 'Internal server error' : e.message);
  }
  const mapped = storeError(err);
  if (mapped) return scimError(mapped);
  const f = (err ?? {}) as FastifyishError;
  switch (f.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return build(413, undefined, 'Request body is larger than the server accepts');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return build(415, undefined, 'Content-Type must be application/scim+json or application/json');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return build(400, 'invalidSyntax', f.message ?? 'Malformed request body');
  }
  if (typeof f.statusCode === 'number' && f.statusCode >= 400 && f.statusCode < 500) return build(f.statusCode, undefined, f.message ?? 'Bad request');
  return build(500, undefined, 'Internal server error');
}

function build(status: number, scimType: ScimType | undefined, detail: string, headers: Record<string, string> = {}) {
  const body: ScimErrorBody = { schemas: [ERROR_SCHEMA], status: String(status), detail: detail || `HTTP ${status}` };
  if (scimType) body.scimType = scimType;
  return { status, body, headers };
}

/** Sends a SCIM error as a plain object (a scimmy ErrorResponse is an Error and Fastify would re-serialise it). */
export function sendScimError(reply: FastifyReply, err: unknown): FastifyReply {
  const { status, body, headers } = scimError(err);
  for (const [k, v] of Object.entries(headers)) reply.header(k, v);
  return reply.code(status).type(SCIM_CONTENT_TYPE).send(body);
}
