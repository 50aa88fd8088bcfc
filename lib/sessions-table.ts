import { RemovalPolicy } from 'aws-cdk-lib';
import { AttributeType, BillingMode, ProjectionType, Table, TableEncryption } from 'aws-cdk-lib/aws-dynamodb';
import { Construct } from 'constructs';
import { TABLE } from '../functions/core/store/table.js';

/** Provisioned capacity kept at a target utilisation by auto scaling, for the table and its index alike. */
export interface TableCapacity {
  readonly minReadCapacity: number;
  readonly maxReadCapacity: number;
  readonly minWriteCapacity: number;
  readonly maxWriteCapacity: number;
  readonly targetUtilizationPercent: number;
}

export interface SessionsTableProps {
  /** RETAIN keeps the table (and turns on deletion protection); DESTROY is for throw-away stacks. */
  readonly removalPolicy: RemovalPolicy;
  /** Provisioned capacity with auto scaling; on-demand (pay per request) when absent. */
  readonly provisioned?: TableCapacity;
}

/**
 * The sessions table: sessions and provider configurations, keyed as functions/core/store/table.ts says, with
 * the sparse `byExpiry` index (KEYS_ONLY) the sweep queries. On demand by default; with provisioned
 * capacity, the table and the index each scale their reads and writes on their own utilisation (every
 * refresh writes the index twice, so an index left at its minimum would throttle the commits).
 */
export class SessionsTable extends Construct {
  readonly table: Table;

  constructor(scope: Construct, id: string, props: SessionsTableProps) {
    super(scope, id);
    const retain = props.removalPolicy === RemovalPolicy.RETAIN;
    const capacity = props.provisioned;
    // Auto scaling owns the numbers after the first deploy; the minimum is where a new table starts.
    const initial = capacity && {
      readCapacity: capacity.minReadCapacity,
      writeCapacity: capacity.minWriteCapacity,
    };
    this.table = new Table(this, 'Table', {
      partitionKey: { name: TABLE.partitionKey, type: AttributeType.STRING },
      sortKey: { name: TABLE.sortKey, type: AttributeType.STRING },
      billingMode: capacity ? BillingMode.PROVISIONED : BillingMode.PAY_PER_REQUEST,
      ...initial,
      // Tokens are also sealed by the keyring before they are written; this is the table-level layer.
      encryption: TableEncryption.AWS_MANAGED,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      removalPolicy: props.removalPolicy,
      deletionProtection: retain,
      // Pending authorizations of the connect flow carry it; sessions and providers never do.
      timeToLiveAttribute: TABLE.ttlAttribute,
    });
    this.table.addGlobalSecondaryIndex({
      indexName: TABLE.expiryIndex,
      partitionKey: { name: TABLE.shardAttribute, type: AttributeType.NUMBER },
      sortKey: { name: TABLE.dueAttribute, type: AttributeType.NUMBER },
      // Lease and failure attributes are never projected, so taking a lease does not write to the index.
      projectionType: ProjectionType.KEYS_ONLY,
      ...initial,
    });
    if (capacity) {
      const target = { targetUtilizationPercent: capacity.targetUtilizationPercent };
      const reads = { minCapacity: capacity.minReadCapacity, maxCapacity: capacity.maxReadCapacity };
      const writes = { minCapacity: capacity.minWriteCapacity, maxCapacity: capacity.maxWriteCapacity };
      this.table.autoScaleReadCapacity(reads).scaleOnUtilization(target);
      this.table.autoScaleWriteCapacity(writes).scaleOnUtilization(target);
      this.table
        .autoScaleGlobalSecondaryIndexReadCapacity(TABLE.expiryIndex, reads)
        .scaleOnUtilization(target);
      this.table
        .autoScaleGlobalSecondaryIndexWriteCapacity(TABLE.expiryIndex, writes)
        .scaleOnUtilization(target);
    }
  }
}
