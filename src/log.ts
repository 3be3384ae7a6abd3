import { pino, type Logger } from 'pino';

/**
 * Secrets must never reach a log line: bearer tokens, passwords, iLOQ session ids, webhook
 * secrets. Redaction by path covers request headers and config objects wherever they appear.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers.sessionid',
  'req.headers["x-api-key"]',
  'headers.authorization',
  'headers.sessionid',
  'headers["x-api-key"]',
  '*.password',
  '*.Password',
  '*.token',
  '*.secret',
  '*.apiKey',
  '*.SessionID',
  '*.SessionId',
  '*.bearerToken',
  '*.passphrase',
  '*.signKey',
  '*.clientSecret',
  '*.clientState',
  'config.lockSystems[*].iloq.password',
  'config.lockSystems[*].iloq.apiKey',
  'config.lockSystems[*].iloq.webhook.signKey',
  'config.lockSystems[*].cliq.bearerToken',
  'config.lockSystems[*].cliq.tls.passphrase',
  'config.lockdown.notify.headers',
];

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino({ level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: { service: 'lockstep' } }, destination as never);
}

export type { Logger };
