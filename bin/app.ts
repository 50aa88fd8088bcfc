import { App, Tags, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { loadConfig, type TokenKeeperConfig, TokenKeeperConfigError } from '../lib/config.js';
import { TokenKeeperStack } from '../lib/tokenkeeper-stack.js';

/** CDK app entry (`npx cdk synth|deploy`). Configuration comes from CDK context; see the README, section Deploy. */
const app = new App();

let config: TokenKeeperConfig;
try {
  config = loadConfig(app);
} catch (err) {
  if (!(err instanceof TokenKeeperConfigError)) throw err;
  console.error(err.message);
  process.exit(1);
}

const stackName = String(app.node.tryGetContext('stackName') ?? 'TokenKeeper');
new TokenKeeperStack(app, stackName, {
  description: 'tokenkeeper: keeps OAuth sessions refreshed and serves access tokens to backends (SigV4)',
  config,
});
Tags.of(app).add('app', 'tokenkeeper');

// AWS Solutions checks run on every synth; a finding without an acknowledgement fails it.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
