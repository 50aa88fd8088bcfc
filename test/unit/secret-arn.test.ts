import { describe, expect, it } from 'vitest';
import { clientSecretArnProblem, secretNameOf } from '../../functions/core/crypto/secret-arn.js';

/** Threat: a caller who may register providers makes the keeper send the keyring as a client secret. */

const KEYRING = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:TokenKeeperKeyring1A2B3C-AbCdEf';
const rules = { prefix: 'tokenkeeper/', keyringSecretArn: KEYRING };

describe('clientSecretArn rules', () => {
  it('reads the secret name out of full and partial ARNs, in any partition', () => {
    expect(secretNameOf('arn:aws:secretsmanager:us-east-1:123456789012:secret:tokenkeeper/a-XyZ123')).toBe(
      'tokenkeeper/a-XyZ123',
    );
    expect(secretNameOf('arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:tokenkeeper/a')).toBe(
      'tokenkeeper/a',
    );
    expect(secretNameOf('arn:aws:s3:::bucket')).toBeUndefined();
  });

  it('accepts a secret named under the prefix', () => {
    expect(
      clientSecretArnProblem(
        'arn:aws:secretsmanager:eu-west-1:123456789012:secret:tokenkeeper/github-AbC123',
        rules,
      ),
    ).toBeUndefined();
  });

  it('refuses a secret outside the prefix', () => {
    expect(
      clientSecretArnProblem('arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-password', rules),
    ).toContain('named under "tokenkeeper/"');
  });

  it('refuses the keyring, by full or partial ARN, even when it sits under the prefix', () => {
    expect(clientSecretArnProblem(KEYRING, { prefix: 'Token' })).toBeUndefined();
    expect(clientSecretArnProblem(KEYRING, { prefix: 'Token', keyringSecretArn: KEYRING })).toContain(
      'keyring',
    );
    const partial = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:TokenKeeperKeyring1A2B3C';
    expect(clientSecretArnProblem(partial, { prefix: 'Token', keyringSecretArn: KEYRING })).toContain(
      'keyring',
    );
    const underPrefix = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:tokenkeeper/keyring-QwErTy';
    expect(
      clientSecretArnProblem('arn:aws:secretsmanager:eu-west-1:123456789012:secret:tokenkeeper/', {
        prefix: 'tokenkeeper/',
        keyringSecretArn: underPrefix,
      }),
    ).toContain('keyring');
  });

  it('refuses a secret in another region or account than the keeper (the grant covers neither)', () => {
    const here = { ...rules, region: 'eu-west-1', accountId: '123456789012' };
    const ok = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:tokenkeeper/github-AbC123';
    expect(clientSecretArnProblem(ok, here)).toBeUndefined();
    expect(
      clientSecretArnProblem(
        'arn:aws:secretsmanager:us-east-1:123456789012:secret:tokenkeeper/github-AbC123',
        here,
      ),
    ).toBe("clientSecretArn: the secret must be in this keeper's region (eu-west-1)");
    expect(
      clientSecretArnProblem(
        'arn:aws:secretsmanager:eu-west-1:999999999999:secret:tokenkeeper/github-AbC123',
        here,
      ),
    ).toBe("clientSecretArn: the secret must be in this keeper's AWS account (123456789012)");
  });

  it('skips the account check when the account is unknown (local stack)', () => {
    const local = { ...rules, region: 'eu-west-1' };
    expect(
      clientSecretArnProblem(
        'arn:aws:secretsmanager:eu-west-1:999999999999:secret:tokenkeeper/github-AbC123',
        local,
      ),
    ).toBeUndefined();
  });
});
