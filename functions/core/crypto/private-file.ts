import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A small owner-only file in the local data directory (the keyring, the API key): read when it exists
 * and `accept` takes its content, otherwise created with mode 0600 (directory 0700). Two processes
 * starting at once end up with the same content: the second one reads what the first one wrote.
 */
export async function readOrCreatePrivateFile(
  dir: string,
  name: string,
  create: () => string,
  accept: (text: string) => boolean = () => true,
): Promise<{ text: string; path: string; created: boolean }> {
  const path = join(dir, name);
  let replace = false;
  try {
    const text = await readFile(path, 'utf8');
    if (accept(text)) return { text, path, created: false };
    replace = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const text = create();
  try {
    await writeFile(path, text, { mode: 0o600, flag: replace ? 'w' : 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      return { text: await readFile(path, 'utf8'), path, created: false };
    }
    throw err;
  }
  await chmod(path, 0o600);
  return { text, path, created: true };
}
