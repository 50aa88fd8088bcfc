import { createHash, randomBytes } from 'node:crypto';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { FieldCipher } from '../crypto/crypto.js';
import type { SessionKey } from '../model.js';
import type { TokenResponseInput } from '../services.js';
import { SingleUseItems } from './single-use.js';

/**
 * Pending connections: the tokens of an app-bound authorization (one started with a `redirectUri`),
 * held until the application completes the connection for the user it is serving. The browser that
 * finished the authorization only carries the id back to the application; the id alone connects
 * nothing, because completion is an authenticated call that must name the same user and provider.
 *
 * Kept like pending authorizations (./single-use.ts): keyed by the SHA-256 of the id (the id itself
 * is never stored), sealed with the keyring, bound by AAD to that key, the user and the provider.
 * Taken by one conditional delete, so an id completes at most once; the condition also names the
 * user and the provider, so a wrong or late completion changes nothing.
 */

/** How long the application has to complete a connection after the callback. */
export const CONNECTION_LIFETIME_SECONDS = 600;

export interface PendingConnection extends SessionKey {
  /** The token response as the code exchange returned it (`expires_at` absolute, epoch seconds). */
  token: TokenResponseInput;
  /** When the code was exchanged (epoch ms): relative lifetimes count from then. */
  obtainedAt: number;
  /** epoch seconds */
  expiresAt: number;
}

export interface ConnectionStore {
  put(id: string, pending: PendingConnection): Promise<void>;
  /**
   * Deletes the connection and returns it when it is pending for exactly `key` and not expired;
   * otherwise changes nothing and returns undefined.
   */
  take(id: string, key: SessionKey, nowMs: number): Promise<PendingConnection | undefined>;
}

/** 256 random bits, base64url. */
export function newConnectionId(): string {
  return randomBytes(32).toString('base64url');
}

/** What an id looks like: anything else is no id the keeper issued. */
export const CONNECTION_ID = /^[A-Za-z0-9_-]{43}$/u;

const CONNECTION_SK = 'CONNECTION';

export function connectionPk(id: string): string {
  return `CONNECTION#${createHash('sha256').update(id, 'utf8').digest('base64url')}`;
}

const aad = (pk: string, key: SessionKey) =>
  `${pk}\u0000${CONNECTION_SK}\u0000${key.userId}\u0000${key.providerId}\u0000pending`;

export class DynamoConnectionStore implements ConnectionStore {
  private readonly items: SingleUseItems;

  constructor(doc: DynamoDBDocumentClient, tableName: string, cipher: FieldCipher) {
    this.items = new SingleUseItems(doc, tableName, cipher, CONNECTION_SK, 'pending_connection');
  }

  async put(id: string, pending: PendingConnection): Promise<void> {
    const pk = connectionPk(id);
    await this.items.put(pk, JSON.stringify(pending), aad(pk, pending), pending.expiresAt, {
      userId: pending.userId,
      providerId: pending.providerId,
    });
  }

  async take(id: string, key: SessionKey, nowMs: number): Promise<PendingConnection | undefined> {
    const pk = connectionPk(id);
    // The AAD names the user and provider: attributes rewritten in the table do not decrypt.
    const text = await this.items.take(pk, aad(pk, key), nowMs, {
      userId: key.userId,
      providerId: key.providerId,
    });
    if (text === undefined) return undefined;
    const pending = JSON.parse(text) as PendingConnection;
    return pending.userId === key.userId && pending.providerId === key.providerId ? pending : undefined;
  }
}
