#!/usr/bin/env node
// The `tokenkeeper` package bin. The CLI is TypeScript (bin/cli.ts); tsx's loader runs it without a
// build step. tsx is a devDependency: a published package would ship compiled JavaScript instead.
import { register } from 'tsx/esm/api';

register();
await import('./cli.ts');
