/**
 * Captures what the process writes to stdout and stderr (Powertools' JSON log lines and EMF documents)
 * while a phase runs: counts lines and bytes and discards them, so the table stays readable and the
 * log volume per refresh and per token request is measured, not guessed.
 */
export class StdoutCapture {
  bytes = 0;
  lines = 0;
  emfBytes = 0;
  emfDocuments = 0;
  private originals?: { stdout: typeof process.stdout.write; stderr: typeof process.stderr.write };

  start(): void {
    if (this.originals) return;
    this.bytes = 0;
    this.lines = 0;
    this.emfBytes = 0;
    this.emfDocuments = 0;
    this.originals = { stdout: process.stdout.write, stderr: process.stderr.write };
    // Powertools writes INFO and EMF to stdout, WARN and ERROR to stderr; Lambda ships both.
    const sink = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      const size = Buffer.byteLength(text, 'utf8');
      const lines = text.split('\n').filter((l) => l.length > 0).length;
      this.bytes += size;
      this.lines += lines;
      if (text.includes('"_aws"')) {
        this.emfBytes += size;
        this.emfDocuments += lines;
      }
      const callback = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      callback?.();
      return true;
    }) as typeof process.stdout.write;
    process.stdout.write = sink;
    process.stderr.write = sink;
  }

  stop(): void {
    if (!this.originals) return;
    process.stdout.write = this.originals.stdout;
    process.stderr.write = this.originals.stderr;
    this.originals = undefined;
  }

  /** Plain log lines (not EMF). */
  get logBytes(): number {
    return this.bytes - this.emfBytes;
  }
}
