import { envelopeParts } from '../crypto/crypto.js';
import type { MacCheck } from '../crypto/mac.js';
import type { ProviderConfig } from '../model.js';

/**
 * What a provider item's MAC covers, and its canonical encoding.
 *
 * Every setting the operator's write (a PUT, or the registration by MCP server URL) stored is
 * covered: where a request goes (issuer and every endpoint, the MCP server URL), what it carries
 * (client id, authentication method, the secret's ARN, the sealed secret itself, resource, scope)
 * and how the flow is checked (`issParameterSupported`). What the keeper itself updates without the
 * keyring — the circuit, the rejected-client flag, the first `createdAt` — is not: changing it can
 * delay refreshes but sends nothing anywhere.
 *
 * The type below makes a new `ProviderConfig` field a compile error until it is listed in one of
 * the two lists.
 */
export const PROVIDER_MAC_FIELDS = [
  'issuer',
  'tokenEndpoint',
  'revocationEndpoint',
  'authorizationEndpoint',
  'mcpServerUrl',
  'clientId',
  'clientAuthMethod',
  'clientSecretArn',
  'resource',
  'scope',
  'registration',
  'scopesSupported',
  'issParameterSupported',
  'refreshPolicy',
  'refreshTokenIdleSeconds',
  'maxConcurrentRefreshes',
  'updatedAt',
] as const satisfies readonly (keyof ProviderConfig)[];

/** Not covered: the id is bound separately, the secret by its sealed form, the rest is the keeper's own state. */
const NOT_COVERED = [
  'providerId',
  'clientSecret',
  'createdAt',
  'clientRejectedAt',
  'circuit',
] as const satisfies readonly (keyof ProviderConfig)[];

type Unclassified = Exclude<
  keyof ProviderConfig,
  (typeof PROVIDER_MAC_FIELDS)[number] | (typeof NOT_COVERED)[number]
>;
// A compile error names any ProviderConfig field in neither list.
const everyFieldClassified: [Unclassified] extends [never] ? true : Unclassified = true;
void everyFieldClassified;

const DOMAIN = 'tokenkeeper provider settings v1';

/** Type tags of the encoding. */
const ABSENT = 0;
const STRING = 1;
const NUMBER = 2;
const BOOLEAN = 3;
const LIST = 4;
const BYTES = 5;

class Writer {
  private readonly parts: Buffer[] = [];
  bytes(b: Uint8Array): this {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(b.byteLength);
    this.parts.push(length, Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    return this;
  }
  text(s: string): this {
    return this.bytes(Buffer.from(s, 'utf8'));
  }
  tag(t: number): this {
    this.parts.push(Buffer.from([t]));
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/**
 * The bytes the MAC is computed over: the domain label, the provider id (so an item copied under
 * another provider's key does not verify), then each covered field by name in a fixed order, typed
 * and length-prefixed (absent is distinct from empty), then the sealed client secret by its key id,
 * nonce and ciphertext (the same in the binary and the text envelope). Injective: two different
 * settings never encode alike.
 */
export function providerMacMessage(
  providerId: string,
  settings: Pick<ProviderConfig, (typeof PROVIDER_MAC_FIELDS)[number]>,
  sealedClientSecret: unknown,
): Buffer {
  const w = new Writer().text(DOMAIN).text(providerId);
  for (const field of PROVIDER_MAC_FIELDS) {
    w.text(field);
    const value: unknown = settings[field];
    if (value === undefined) w.tag(ABSENT);
    else if (typeof value === 'string') w.tag(STRING).text(value);
    else if (typeof value === 'number') w.tag(NUMBER).text(String(value));
    else if (typeof value === 'boolean') w.tag(BOOLEAN).text(value ? 'true' : 'false');
    else if (Array.isArray(value)) {
      w.tag(LIST).text(String(value.length));
      for (const item of value) w.text(String(item));
    } else throw new Error(`provider field ${field} has no canonical encoding`);
  }
  w.text('clientSecret');
  const envelope =
    typeof sealedClientSecret === 'string' || sealedClientSecret instanceof Uint8Array
      ? envelopeParts(sealedClientSecret)
      : undefined;
  if (sealedClientSecret === undefined) w.tag(ABSENT);
  else if (!envelope) w.tag(BYTES).text('not an envelope');
  else w.tag(BYTES).text(envelope.keyId).bytes(envelope.nonce).bytes(envelope.body);
  return w.done();
}

/** What the API and the logs say about a failed check (no secret, no tag). */
export function integrityProblem(check: Exclude<MacCheck, { ok: true }>): string {
  switch (check.reason) {
    case 'missing':
      return 'the provider item carries no MAC (stored before provider settings were authenticated, or altered); PUT the provider to restore it';
    case 'malformed':
      return 'the provider item carries a malformed MAC; PUT the provider to restore it';
    case 'unknown_key':
      return `the provider item's MAC names key ${JSON.stringify(check.keyId)}, which the keyring does not hold; put the key back or PUT the provider`;
    case 'mismatch':
      return 'the provider settings in the table do not match their MAC (changed outside the API); PUT the provider to restore it';
  }
}
