import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { generateKeyringJson } from './crypto.js';
import { readOrCreatePrivateFile } from './private-file.js';

export const SECRET_NOT_A_STRING = 'secret has no string value';

/** Reads a secret's string value from Secrets Manager. */
export async function readSecretString(client: SecretsManagerClient, secretId: string): Promise<string> {
  const { SecretString } = await client.send(new GetSecretValueCommand({ SecretId: secretId }));
  if (typeof SecretString !== 'string') throw new Error(SECRET_NOT_A_STRING);
  return SecretString;
}

/**
 * The local keyring file: created on first use with mode 0600 in the data directory, then reused,
 * so sessions sealed by one run open in the next.
 */
export async function readOrCreateLocalKeyring(
  dataDir: string,
): Promise<{ json: string; path: string; created: boolean }> {
  const { text, path, created } = await readOrCreatePrivateFile(dataDir, 'keyring.json', () =>
    generateKeyringJson(),
  );
  return { json: text, path, created };
}
