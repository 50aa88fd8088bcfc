import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../lib/keeper-function.js';

/**
 * Runs the real `cdk synth` (the CLI, bin/app.ts, local esbuild bundling, built-in template validation
 * and the cdk-nag checks) offline into a temporary directory.
 */
const run = promisify(execFile);
const CDK = join(PROJECT_ROOT, 'node_modules', '.bin', 'cdk');
const ONE_MB = 1_000_000;
const env = { ...process.env, CDK_DISABLE_VERSION_CHECK: '1' };

function cdkSynth(outdir: string, ...args: string[]) {
  return run(CDK, ['synth', '--quiet', '--no-notices', '-o', outdir, ...args], {
    cwd: PROJECT_ROOT,
    env,
    maxBuffer: 16 * 1024 * 1024,
  });
}

type Json = Record<string, unknown>;

describe('cdk synth (offline, with bundling)', () => {
  const outdir = mkdtempSync(join(tmpdir(), 'tokenkeeper-synth-'));
  let template: { Resources: Record<string, { Type: string; Properties: Json }> };
  let bundles: Record<string, string>;

  beforeAll(async () => {
    await cdkSynth(outdir);
    template = JSON.parse(readFileSync(join(outdir, 'TokenKeeper.template.json'), 'utf8'));
    bundles = {};
    for (const [logicalId, r] of Object.entries(template.Resources)) {
      if (r.Type !== 'AWS::Lambda::Function') continue;
      const key = (r.Properties.Code as { S3Key: string }).S3Key;
      bundles[logicalId] = join(outdir, `asset.${key.replace(/\.zip$/, '')}`);
    }
  }, 180_000);

  afterAll(() => rmSync(outdir, { recursive: true, force: true }));

  it('writes the template with the three functions and passes validation and cdk-nag', () => {
    // Assess
    expect(Object.keys(bundles).sort()).toEqual([
      expect.stringMatching(/^ApiHandlerFunction/),
      expect.stringMatching(/^DispatchFunction/),
      expect.stringMatching(/^RefreshFunction/),
    ]);
    const report = JSON.parse(readFileSync(join(outdir, 'validation-report.json'), 'utf8')) as {
      pluginReports: { violations: unknown[] }[];
    };
    expect(report.pluginReports.flatMap((r) => r.violations)).toEqual([]);
  });

  it('bundles each handler as minified ESM with a source map, under 1 MB', () => {
    for (const [logicalId, dir] of Object.entries(bundles)) {
      // Prepare
      const file = join(dir, 'index.mjs');

      // Assess
      expect(existsSync(file), logicalId).toBe(true);
      expect(existsSync(`${file}.map`), logicalId).toBe(true);
      expect(statSync(file).size, logicalId).toBeLessThan(ONE_MB);
      const code = readFileSync(file, 'utf8');
      expect(code.startsWith('import { createRequire')).toBe(true);
      expect(code.length / code.split('\n').length, 'minified: long lines').toBeGreaterThan(5_000);
      expect(code).toContain('sourceMappingURL=index.mjs.map');
    }
  });

  it('produces bundles that load, and the API bundle answers the health check', async () => {
    // Prepare
    const api = Object.entries(bundles).find(([id]) => id.startsWith('ApiHandler'))?.[1] as string;
    const refresh = Object.entries(bundles).find(([id]) => id.startsWith('Refresh'))?.[1] as string;
    const dispatch = Object.entries(bundles).find(([id]) => id.startsWith('Dispatch'))?.[1] as string;
    const script = `
      const api = await import(${JSON.stringify(join(api, 'index.mjs'))});
      const refresh = await import(${JSON.stringify(join(refresh, 'index.mjs'))});
      const dispatch = await import(${JSON.stringify(join(dispatch, 'index.mjs'))});
      const http = { method: 'GET', path: '/v1/health', sourceIp: '127.0.0.1' };
      const res = await api.handler({ version: '2.0', routeKey: 'GET /v1/health', rawPath: '/v1/health',
        rawQueryString: '', headers: {}, isBase64Encoded: false,
        requestContext: { http, requestId: 'r1', routeKey: 'GET /v1/health', stage: '$default' } }, {});
      console.log('RESULT ' + JSON.stringify({ status: res.statusCode, refresh: typeof refresh.handler,
        dispatch: typeof dispatch.handler }));
    `;
    const childEnv: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      AWS_REGION: 'eu-west-1',
      // The stack gives the dispatcher its queue's URL; without one it refuses to start.
      TOKENKEEPER_SWEEP_QUEUE_URL: 'https://sqs.eu-west-1.amazonaws.com/123456789012/slices',
    };

    // Act
    const { stdout } = await run(process.execPath, ['--no-warnings', '--input-type=module', '-e', script], {
      cwd: tmpdir(),
      env: childEnv,
    });

    // Assess
    const line = stdout.split('\n').find((l) => l.startsWith('RESULT ')) as string;
    expect(JSON.parse(line.slice('RESULT '.length))).toEqual({
      status: 200,
      refresh: 'function',
      dispatch: 'function',
    });
  });

  it('refuses an invalid configuration with a clear error before bundling', async () => {
    // Act
    const failure = await cdkSynth(join(outdir, 'invalid'), '-c', 'refreshWindowSeconds=300').then(
      () => undefined,
      (err: { code: number; stderr: string }) => err,
    );

    // Assess
    expect(failure?.code).not.toBe(0);
    expect(failure?.stderr).toContain('Invalid tokenkeeper configuration');
    expect(failure?.stderr).toContain('refreshWindowSeconds (300) must exceed the schedule period');
  });
});
