import { performance } from 'node:perf_hooks';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { SessionKey } from '../functions/core/model.js';
import { TABLE } from '../functions/core/store/table.js';
import { processCpuMs, selfCpuMs } from './children.js';
import { type BenchEnv, pool } from './env.js';

/**
 * The storage floor: for each session, the two conditional writes of a refresh and nothing else — a
 * lease-shaped and a commit-shaped UpdateItem of the same item (the commit writes back the sealed tokens
 * the lease returned), both returning ALL_NEW as the store's do, through the same document client, C
 * at a time. What the full sweep at L=0 costs beyond
 * this is the keeper's own work (the grant round trip, crypto, protocol logic, logging).
 */

export interface StorageFloorRun {
  sessions: number;
  concurrency: number;
  measuredMs: number;
  msPerSession: number;
  cpuMsPerSession: { bench: number; dynalite?: number };
}

export async function runStorageFloor(
  env: BenchEnv,
  table: string,
  keys: SessionKey[],
  clockOffsetMs = 0,
): Promise<StorageFloorRun> {
  const concurrency = env.params.concurrency;
  const keyOf = (k: SessionKey) => ({
    [TABLE.partitionKey]: `USER#${k.userId}`,
    [TABLE.sortKey]: `SESSION#${k.providerId}`,
  });
  const cpu0 = { bench: selfCpuMs(), dynalite: processCpuMs(env.dynalite.pid) };
  const t0 = performance.now();
  await pool(keys.length, concurrency, async (i) => {
    const key = keyOf(keys[i] as SessionKey);
    const now = Date.now() + clockOffsetMs;
    const owner = `floor:${i}`;
    const { Attributes } = await env.doc.send(
      new UpdateCommand({
        TableName: table,
        Key: key,
        UpdateExpression: 'SET leaseOwner = :owner, leaseUntil = :until',
        ConditionExpression:
          '#status = :active AND attribute_exists(refreshToken)' +
          ' AND (attribute_not_exists(leaseUntil) OR leaseUntil < :now)',
        ExpressionAttributeNames: { '#status': 'status' },
        ExpressionAttributeValues: {
          ':active': 'active',
          ':owner': owner,
          ':until': now + 30_000,
          ':now': now,
        },
        ReturnValues: 'ALL_NEW',
      }),
    );
    await env.doc.send(
      new UpdateCommand({
        TableName: table,
        Key: key,
        UpdateExpression:
          'SET accessToken = :at, refreshToken = :rt, version = version + :one, refreshedAt = :now, ' +
          `expiresAt = :exp, ${TABLE.shardAttribute} = ${TABLE.shardAttribute} REMOVE leaseOwner, leaseUntil`,
        ConditionExpression: 'leaseOwner = :owner',
        ExpressionAttributeValues: {
          ':owner': owner,
          // The sealed values the lease returned: same sizes, and the session stays usable.
          ':at': Attributes?.accessToken,
          ':rt': Attributes?.refreshToken,
          ':one': 1,
          ':now': now,
          ':exp': Math.floor(now / 1000) + 3600,
        },
        ReturnValues: 'ALL_NEW',
      }),
    );
  });
  const measuredMs = performance.now() - t0;
  const cpu1 = { bench: selfCpuMs(), dynalite: processCpuMs(env.dynalite.pid) };
  return {
    sessions: keys.length,
    concurrency,
    measuredMs,
    msPerSession: measuredMs / keys.length,
    cpuMsPerSession: {
      bench: (cpu1.bench - cpu0.bench) / keys.length,
      dynalite:
        cpu0.dynalite === undefined || cpu1.dynalite === undefined
          ? undefined
          : (cpu1.dynalite - cpu0.dynalite) / keys.length,
    },
  };
}
