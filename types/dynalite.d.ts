// Minimal typing for dynalite (ships no types). Named apart from dynalite.ts, because TypeScript skips a
// `.d.ts` whose base name matches a `.ts` file in the same folder.
declare module 'dynalite' {
  import type { Server } from 'node:http';

  interface DynaliteOptions {
    verbose?: boolean;
    debug?: boolean;
    ssl?: boolean;
    createTableMs?: number;
    deleteTableMs?: number;
    updateTableMs?: number;
    maxItemSizeKb?: number;
    /** LevelDB path; in-memory when omitted. */
    path?: string;
  }

  function dynalite(options?: DynaliteOptions): Server;
  export = dynalite;
}
