/** Concurrency primitives the core shares (the sweep's grant pool, the circuit's per-provider limit). */

/** A counting semaphore: `acquire()` resolves with a release function once one of `size` slots is free. */
export function semaphore(size: number): () => Promise<() => void> {
  let free = size;
  const waiting: (() => void)[] = [];
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else free++;
  };
  return () =>
    new Promise((resolve) => {
      const grant = () => {
        let released = false;
        resolve(() => {
          if (!released) {
            released = true;
            release();
          }
        });
      };
      if (free > 0) {
        free--;
        grant();
      } else waiting.push(grant);
    });
}
