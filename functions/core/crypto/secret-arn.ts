/**
 * Which Secrets Manager secrets a provider may name as its client secret (`clientSecretArn`).
 * The functions can read the token-encryption keyring; a provider pointing at it would make the keeper
 * send the keyring to a token endpoint of the caller's choosing. So a client secret must be named
 * under a configured prefix, and never be the keyring.
 */

const SECRET_ARN = /^arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):(\d{12}):secret:(.+)$/;

/** The secret's name in an ARN, without the random suffix Secrets Manager appends to full ARNs. */
export function secretNameOf(arn: string): string | undefined {
  return SECRET_ARN.exec(arn)?.[3];
}

export interface SecretRules {
  prefix: string;
  keyringSecretArn?: string;
  /** The functions' region: the stack grants GetSecretValue on secrets in this region only. */
  region?: string;
  /** The functions' account (unknown locally: then any account is accepted). */
  accountId?: string;
}

/** Why `arn` may not be used as a client secret, or undefined when it may. */
export function clientSecretArnProblem(arn: string, rules: SecretRules): string | undefined {
  const match = SECRET_ARN.exec(arn);
  if (match === null) return 'clientSecretArn: must be a Secrets Manager secret ARN';
  const [, region, accountId, name = ''] = match;
  // The functions may read secrets in their own region and account only: anything else would be
  // accepted here and then fail at every refresh.
  if (rules.region !== undefined && region !== rules.region) {
    return `clientSecretArn: the secret must be in this keeper's region (${rules.region})`;
  }
  if (rules.accountId !== undefined && accountId !== rules.accountId) {
    return `clientSecretArn: the secret must be in this keeper's AWS account (${rules.accountId})`;
  }
  if (!name.startsWith(rules.prefix)) {
    return `clientSecretArn: the secret must be named under "${rules.prefix}"`;
  }
  const keyringName = rules.keyringSecretArn ? secretNameOf(rules.keyringSecretArn) : undefined;
  if (keyringName && (keyringName.startsWith(name) || name.startsWith(keyringName))) {
    return 'clientSecretArn: must not name the token-encryption keyring';
  }
  return undefined;
}
