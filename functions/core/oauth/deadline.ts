/**
 * A request's time limit that an answer already received beats.
 *
 * `AbortSignal.timeout` aborts when its timer runs. After a pause of the process (a long GC, a
 * throttled container, a suspended laptop) the event loop runs its due timers before it polls its
 * sockets, so such a timer fires while the provider's answer already sits in the socket, and the
 * answer is thrown away. This deadline, when its timer runs, first lets pending I/O run (two turns
 * of the loop through `setImmediate`, which comes after the poll phase, and a short grace when the
 * timer ran late — the sign of a blocked loop), and aborts only if by then no answer has arrived.
 * Once the answer's head is in, reading its body gets a bounded allowance of its own instead of the
 * rest of the original time.
 */

/** How much longer than scheduled a timer may run before the loop counts as having been blocked. */
const LATE_MS = 50;
/** After a late timer: the time given to reads the blocked loop has not done yet. */
const LATE_GRACE_MS = 200;
/** The longest a body may take to arrive once its head is in and the request's own time is up. */
const BODY_ALLOWANCE_MS = 5_000;

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

export class AnswerDeadline {
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private dueAt = 0;
  private phase: 'waiting' | 'head' | 'body' | 'done' = 'waiting';

  /** `ms`: the time the request has for its answer's head. */
  constructor(readonly ms: number) {
    this.signal = this.controller.signal;
    this.arm(Math.max(1, ms));
  }

  /** The answer's status and headers are in: its body gets the body allowance, not the original timer. */
  headArrived(): void {
    if (this.phase === 'waiting') this.phase = 'head';
  }

  /** The whole answer is in, or the request ended otherwise: nothing left to abort. */
  finished(): void {
    this.phase = 'done';
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Whether the deadline (not the answer) ended the request. */
  get expired(): boolean {
    return this.signal.aborted;
  }

  private arm(ms: number): void {
    this.dueAt = performance.now() + ms;
    this.timer = setTimeout(() => void this.expire(), ms);
    // A pending request keeps the process alive through its socket, not through this timer.
    this.timer.unref?.();
  }

  private async expire(): Promise<void> {
    this.timer = undefined;
    const lateMs = performance.now() - this.dueAt;
    // Timers run before the poll phase that reads sockets; setImmediate runs after it.
    await nextTurn();
    await nextTurn();
    if (this.phase !== 'done' && lateMs > LATE_MS) {
      // The loop was blocked: what arrived meanwhile may take more than one read to be parsed.
      await new Promise<void>((resolve) => setTimeout(resolve, LATE_GRACE_MS).unref?.());
      await nextTurn();
    }
    if (this.phase === 'done') return;
    if (this.phase === 'head') {
      this.phase = 'body';
      this.arm(BODY_ALLOWANCE_MS);
      return;
    }
    this.controller.abort(new DOMException(`no answer within ${this.ms} ms`, 'TimeoutError'));
  }
}
