import { createHash, randomBytes } from 'node:crypto';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { FieldCipher } from '../crypto/crypto.js';
import { SingleUseItems } from './single-use.js';

/**
 * Pending authorizations: what the callback needs to finish a connection, keyed by the SHA-256 of the
 * state (the state itself is never stored) and sealed with the keyring, bound by AAD to that key.
 * They live in the sessions table in their own key space, with a TTL attribute, and never carry the
 * index attributes, so the sweep never sees them. A state is consumed by one conditional delete:
 * two callbacks with the same state cannot both get it.
 */

/** How long a user has to come back from the authorization server. */
export const STATE_LIFETIME_SECONDS = 600;

export interface PendingAuthorization {
  userId: string;
  providerId: string;
  codeVerifier: string;
  /** The keeper's callback URL the authorization request named (the code exchange repeats it). */
  callbackUrl: string;
  /** Where the browser goes afterwards; absent: the keeper's own page. */
  redirectUri?: string;
  /** epoch seconds */
  expiresAt: number;
}

export interface StateStore {
  put(state: string, pending: PendingAuthorization): Promise<void>;
  /** Deletes the state and returns what it held; undefined when unknown, already used or expired. */
  consume(state: string, nowMs: number): Promise<PendingAuthorization | undefined>;
}

/** 256 random bits, base64url. */
export function newState(): string {
  return randomBytes(32).toString('base64url');
}

const STATE_SK = 'CONNECT';

export function statePk(state: string): string {
  return `CONNECT#${createHash('sha256').update(state, 'utf8').digest('base64url')}`;
}

const aad = (pk: string) => `${pk}\u0000${STATE_SK}\u0000pending`;

export class DynamoStateStore implements StateStore {
  private readonly items: SingleUseItems;

  constructor(doc: DynamoDBDocumentClient, tableName: string, cipher: FieldCipher) {
    this.items = new SingleUseItems(doc, tableName, cipher, STATE_SK, 'connect_state');
  }

  async put(state: string, pending: PendingAuthorization): Promise<void> {
    const pk = statePk(state);
    await this.items.put(pk, JSON.stringify(pending), aad(pk), pending.expiresAt);
  }

  async consume(state: string, nowMs: number): Promise<PendingAuthorization | undefined> {
    const pk = statePk(state);
    const text = await this.items.take(pk, aad(pk), nowMs);
    return text === undefined ? undefined : (JSON.parse(text) as PendingAuthorization);
  }
}
