import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { generateKeyringJson } from './crypto.js';

/** Reads a secret's string value from Secrets Manager. */
export async function readSecretString(client: SecretsManagerClient, secretId: string): Promise<string> {
  const { SecretString } = await client.send(new GetSecretValueCommand({ SecretId: secretId }));
  if (typeof SecretString !== 'string') throw new Error('secret has no string value');
  return SecretString;
}

/**
 * The local keyring file: created on first use with mode 0600 in the data directory, then reused,
 * so sessions sealed by one run open in the next.
 */
export async function readOrCreateLocalKeyring(
  dataDir: string,
): Promise<{ json: string; path: string; created: boolean }> {
  const path = join(dataDir, 'keyring.json');
  try {
    return { json: await readFile(path, 'utf8'), path, created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const json = generateKeyringJson();
  try {
    await writeFile(path, json, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    // Another process created it first: use theirs.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      return { json: await readFile(path, 'utf8'), path, created: false };
    throw err;
  }
  await chmod(path, 0o600);
  return { json, path, created: true };
}
