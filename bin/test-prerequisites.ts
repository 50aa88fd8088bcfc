/**
 * `npm test`'s first step (pretest): the Node.js check (bin/check-node.ts), then the system packages
 * two kinds of test need, installed when missing.
 * - Browser tests (test/browser/, test/console/) drive Debian's chromium through playwright-core
 *   (Playwright's own browser download is unreachable).
 * - test/integration/open-webui-recipe.test.ts runs docs/open-webui.md's Python client. Its pinned
 *   requirements are Debian's packages (PyPI is unreachable), in a venv that sees them: Debian's own
 *   python3, not a pyenv one, which would not see them.
 * All present: a quick look and nothing printed. Missing: one apt-get run, as root. Without apt-get or
 * root: one line saying what to install, and `npm test` stops. It never skips a test.
 */

import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join, resolve } from 'node:path';
import { KEEPER_NODE_MAJOR, KEEPER_RUNTIME, PROJECT_ROOT } from '../lib/keeper-function.js';
import { checkNode } from './check-node.js';

export const CHROMIUM = '/usr/bin/chromium';
export const SYSTEM_PYTHON = '/usr/bin/python3';
/** The Open WebUI recipe's venv: Debian's python3 with --system-site-packages, nothing installed in it. */
export const RECIPE_VENV_PYTHON = join(PROJECT_ROOT, '.venv-open-webui', 'bin', 'python');
const RECIPE_MODULES = ['aiohttp', 'yarl', 'botocore'];
const PYTHON_PACKAGES = ['python3', 'python3-aiohttp', 'python3-yarl', 'python3-botocore'];

/** What the machine has; each is asked only when the answer matters. */
export interface Probes {
  executable(path: string): boolean;
  /** The python at this path finds the recipe's modules. */
  hasRecipeModules(python: string): boolean;
  isRoot(): boolean;
  hasAptGet(): boolean;
}

export type Plan =
  | { kind: 'ready' }
  | { kind: 'prepare'; aptPackages: string[]; makeVenv: boolean }
  | { kind: 'stop'; line: string };

export function planPrerequisites(probe: Probes): Plan {
  const chromium = probe.executable(CHROMIUM);
  const venv = probe.executable(RECIPE_VENV_PYTHON) && probe.hasRecipeModules(RECIPE_VENV_PYTHON);
  if (chromium && venv) return { kind: 'ready' };

  const aptPackages = [
    ...(chromium ? [] : ['chromium']),
    ...(venv || probe.hasRecipeModules(SYSTEM_PYTHON) ? [] : PYTHON_PACKAGES),
  ];
  if (aptPackages.length > 0 && !(probe.isRoot() && probe.hasAptGet())) {
    const list = aptPackages.join(' ');
    return {
      kind: 'stop',
      line:
        `npm test needs system packages: install ${list} ` +
        `(Debian's names; as root: apt-get install -y ${list}), then run npm test again`,
    };
  }
  return { kind: 'prepare', aptPackages, makeVenv: !venv };
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): void {
  const result = spawnSync(command, args, { stdio: ['ignore', 'ignore', 'inherit'], env });
  if (result.status !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} failed (${result.error?.message ?? `exit ${result.status}`})`,
    );
  }
}

const machine: Probes = {
  executable(path) {
    try {
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  },
  // find_spec, not import: importing botocore alone takes about a second.
  hasRecipeModules(python) {
    const names = RECIPE_MODULES.map((m) => `'${m}'`).join(', ');
    const code = `import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in (${names})))`;
    return spawnSync(python, ['-c', code], { stdio: 'ignore' }).status === 0;
  },
  isRoot: () => process.getuid?.() === 0,
  hasAptGet: () => spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0,
};

function main(): number {
  const node = checkNode(process.version, process.execPath, KEEPER_RUNTIME.name, KEEPER_NODE_MAJOR);
  (node.ok ? process.stdout : process.stderr).write(`${node.line}\n`);
  if (!node.ok) return 1;

  const plan = planPrerequisites(machine);
  if (plan.kind === 'ready') return 0;
  if (plan.kind === 'stop') {
    process.stderr.write(`${plan.line}\n`);
    return 1;
  }
  if (plan.aptPackages.length > 0) {
    process.stdout.write(`npm test: installing ${plan.aptPackages.join(' ')} (apt-get)\n`);
    run('apt-get', ['update', '-qq']);
    run('apt-get', ['install', '-y', '-qq', ...plan.aptPackages], {
      ...process.env,
      DEBIAN_FRONTEND: 'noninteractive',
    });
  }
  if (plan.makeVenv) {
    // Made again when it was left by another python: nothing goes into it, so no pip either.
    const dir = join(RECIPE_VENV_PYTHON, '..', '..');
    run(SYSTEM_PYTHON, ['-m', 'venv', '--clear', '--without-pip', '--system-site-packages', dir]);
  }
  const after = planPrerequisites(machine);
  if (after.kind !== 'ready') {
    process.stderr.write(
      `npm test: still missing after the install: ${CHROMIUM} or ${RECIPE_MODULES.join(', ')} in ${RECIPE_VENV_PYTHON}\n`,
    );
    return 1;
  }
  return 0;
}

if (resolve(process.argv[1] ?? '') === import.meta.filename) process.exitCode = main();
