/**
 * Which Secrets Manager secrets a provider may name as its client secret (`clientSecretArn`).
 * The functions can read the token-encryption keyring; a provider pointing at it would make the keeper
 * send the keyring to a token endpoint of the caller's choosing. So a client secret must be named
 * under a configured prefix, and never be the keyring.
 */

/** The secret's name in an ARN, without the random suffix Secrets Manager appends to full ARNs. */
export function secretNameOf(arn: string): string | undefined {
  const match = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:(.+)$/.exec(arn);
  return match?.[1];
}

/** Why `arn` may not be used as a client secret, or undefined when it may. */
export function clientSecretArnProblem(
  arn: string,
  rules: { prefix: string; keyringSecretArn?: string },
): string | undefined {
  const name = secretNameOf(arn);
  if (name === undefined) return 'clientSecretArn: must be a Secrets Manager secret ARN';
  if (!name.startsWith(rules.prefix)) {
    return `clientSecretArn: the secret must be named under "${rules.prefix}"`;
  }
  const keyringName = rules.keyringSecretArn ? secretNameOf(rules.keyringSecretArn) : undefined;
  if (keyringName && (keyringName.startsWith(name) || name.startsWith(keyringName))) {
    return 'clientSecretArn: must not name the token-encryption keyring';
  }
  return undefined;
}
