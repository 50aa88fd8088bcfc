import { RemovalPolicy } from 'aws-cdk-lib';
import { AttributeType, BillingMode, ProjectionType, Table, TableEncryption } from 'aws-cdk-lib/aws-dynamodb';
import { Construct } from 'constructs';
import { TABLE } from '../functions/core/store/table.js';

export interface SessionsTableProps {
  /** RETAIN keeps the table (and turns on deletion protection); DESTROY is for throw-away stacks. */
  readonly removalPolicy: RemovalPolicy;
}

/**
 * The sessions table: sessions and provider configurations, keyed as functions/core/store/table.ts says, with
 * the sparse `byExpiry` index (KEYS_ONLY) the sweep queries.
 */
export class SessionsTable extends Construct {
  readonly table: Table;

  constructor(scope: Construct, id: string, props: SessionsTableProps) {
    super(scope, id);
    const retain = props.removalPolicy === RemovalPolicy.RETAIN;
    this.table = new Table(this, 'Table', {
      partitionKey: { name: TABLE.partitionKey, type: AttributeType.STRING },
      sortKey: { name: TABLE.sortKey, type: AttributeType.STRING },
      billingMode: BillingMode.PAY_PER_REQUEST,
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
    });
  }
}
