import { Duration, Stack } from 'aws-cdk-lib';
import type { IHttpApi } from 'aws-cdk-lib/aws-apigatewayv2';
import {
  Alarm,
  AlarmStatusWidget,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  type IMetric,
  MathExpression,
  Metric,
  type MetricOptions,
  TreatMissingData,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type { IRule } from 'aws-cdk-lib/aws-events';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { EmailSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

/** The functions' EMF metrics: Powertools Metrics, namespace TokenKeeper, dimension service. */
export const METRIC_NAMESPACE = 'TokenKeeper';
export const SERVICE_NAME = 'tokenkeeper';

export const SWEEP_METRICS = [
  'Due',
  'Refreshed',
  'Skipped',
  'FailedTransient',
  'ReauthorizationRequired',
  'Missed',
  'Backlog',
  'SweepDuration',
  'SweepSlices',
  'DispatchDuration',
] as const;
export const OTHER_METRICS = [
  'ProviderClientRejected',
  'ProviderCircuitOpen',
  'KeyUnavailable',
  'LeaseLost',
  'GrantOutcomeUnknown',
  'TokensServed',
  'OnDemandRefreshes',
  'TokenLatency',
] as const;
export type KeeperMetricName = (typeof SWEEP_METRICS)[number] | (typeof OTHER_METRICS)[number];

export interface MonitoringProps {
  /** The sweep's workers (one slice per invocation). */
  readonly refreshFunction: IFunction;
  /** The sweep's dispatcher, invoked by the schedule. */
  readonly dispatchFunction: IFunction;
  readonly apiFunction: IFunction;
  readonly schedule: IRule;
  /** The schedule's dead-letter queue (dispatches EventBridge could not deliver). */
  readonly deadLetterQueue: IQueue;
  /** The fan-out's queue of slices, and its dead-letter queue. */
  readonly sliceQueue: IQueue;
  readonly sliceDeadLetterQueue: IQueue;
  readonly api: IHttpApi;
  readonly refreshPeriod: Duration;
  readonly sweepBudget: Duration;
  readonly refreshTimeout: Duration;
  readonly reauthAlarmThreshold: number;
  readonly api5xxAlarmThreshold: number;
  readonly alarmEmail?: string;
}

/**
 * Alarms on everything that means sessions may die or backends may not get tokens, sent to one SNS
 * topic, and a dashboard that graphs the same metrics.
 */
export class Monitoring extends Construct {
  readonly topic: Topic;
  readonly dashboard: Dashboard;
  readonly alarms: Record<
    | 'missedRefresh'
    | 'refreshErrors'
    | 'dispatchErrors'
    | 'scheduleStopped'
    | 'deadLetters'
    | 'sliceDeadLetters'
    | 'sliceBacklog'
    | 'reauthorizationSpike'
    | 'providerClientRejected'
    | 'providerCircuitOpen'
    | 'keyUnavailable'
    | 'api5xx',
    Alarm
  >;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const period = props.refreshPeriod;
    const fiveMinutes = Duration.minutes(5);

    this.topic = new Topic(this, 'AlarmTopic', { displayName: 'tokenkeeper alarms', enforceSSL: true });
    if (props.alarmEmail) this.topic.addSubscription(new EmailSubscription(props.alarmEmail));

    const keeper = (metricName: KeeperMetricName, options: MetricOptions = {}): Metric =>
      new Metric({
        namespace: METRIC_NAMESPACE,
        metricName,
        dimensionsMap: { service: SERVICE_NAME },
        statistic: 'Sum',
        period,
        ...options,
      });

    const alarm = (
      alarmId: string,
      description: string,
      metric: IMetric,
      threshold: number,
      options: { evaluationPeriods?: number; below?: boolean; missing?: TreatMissingData } = {},
    ): Alarm => {
      const a = new Alarm(this, alarmId, {
        alarmDescription: description,
        metric,
        threshold,
        evaluationPeriods: options.evaluationPeriods ?? 1,
        datapointsToAlarm: options.evaluationPeriods ?? 1,
        comparisonOperator: options.below
          ? ComparisonOperator.LESS_THAN_THRESHOLD
          : ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: options.missing ?? TreatMissingData.NOT_BREACHING,
      });
      a.addAlarmAction(new SnsAction(this.topic));
      a.addOkAction(new SnsAction(this.topic));
      return a;
    };

    const dlqMessages = props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
      statistic: 'Maximum',
      period: fiveMinutes,
    });
    const api5xx = props.api.metricServerError({ period: fiveMinutes, statistic: 'Sum' });

    this.alarms = {
      missedRefresh: alarm(
        'MissedRefreshAlarm',
        'A sweep found sessions whose access token had already expired: the schedule or the window is too slow.',
        keeper('Missed'),
        1,
      ),
      refreshErrors: alarm(
        'RefreshErrorsAlarm',
        'The refresh function failed (crash or timeout); its slice of the sweep did not finish and is delivered again.',
        props.refreshFunction.metricErrors({ period, statistic: 'Sum' }),
        1,
      ),
      dispatchErrors: alarm(
        'DispatchErrorsAlarm',
        "The sweep's dispatcher failed: that sweep's slices were not (all) queued; the next sweep covers them.",
        props.dispatchFunction.metricErrors({ period, statistic: 'Sum' }),
        1,
      ),
      scheduleStopped: alarm(
        'ScheduleStoppedAlarm',
        'No sweep was dispatched for three schedule periods: sessions are not being refreshed.',
        props.dispatchFunction.metricInvocations({ period, statistic: 'Sum' }),
        1,
        { evaluationPeriods: 3, below: true, missing: TreatMissingData.BREACHING },
      ),
      deadLetters: alarm(
        'DeadLettersAlarm',
        'Scheduled sweeps could not be delivered to the dispatcher and are in the dead-letter queue.',
        dlqMessages,
        1,
      ),
      sliceDeadLetters: alarm(
        'SliceDeadLettersAlarm',
        'Sweep slices failed every delivery to the refresh function and are in their dead-letter queue ' +
          '(the refresh function logs why: "sweep slice failed" or "malformed").',
        props.sliceDeadLetterQueue.metricApproximateNumberOfMessagesVisible({
          statistic: 'Maximum',
          period: fiveMinutes,
        }),
        1,
      ),
      sliceBacklog: alarm(
        'SliceBacklogAlarm',
        'Sweep slices waited in the queue longer than one schedule period: the workers cannot keep up; ' +
          'raise sweepMaxConcurrency (and refreshReservedConcurrency).',
        props.sliceQueue.metricApproximateAgeOfOldestMessage({ statistic: 'Maximum', period: fiveMinutes }),
        period.toSeconds(),
      ),
      reauthorizationSpike: alarm(
        'ReauthorizationSpikeAlarm',
        `At least ${props.reauthAlarmThreshold} sessions needed re-authorization (invalid_grant) within 15 minutes.`,
        keeper('ReauthorizationRequired', { period: Duration.minutes(15) }),
        props.reauthAlarmThreshold,
      ),
      providerClientRejected: alarm(
        'ProviderClientRejectedAlarm',
        'A provider rejected our client (invalid_client / unauthorized_client): fix its client id or secret.',
        keeper('ProviderClientRejected', { period: fiveMinutes }),
        1,
      ),
      providerCircuitOpen: alarm(
        'ProviderCircuitOpenAlarm',
        "A provider's circuit opened (an outage, a Retry-After, or a rejected client): its sessions get no grant " +
          'until a probe succeeds. The dashboard shows which provider; GET /v1/providers/{id} shows its health.',
        keeper('ProviderCircuitOpen', { period: fiveMinutes }),
        1,
      ),
      keyUnavailable: alarm(
        'KeyUnavailableAlarm',
        'A stored value was sealed with a key that is missing from the keyring secret.',
        keeper('KeyUnavailable', { period: fiveMinutes }),
        1,
      ),
      api5xx: alarm(
        'Api5xxAlarm',
        `The API answered at least ${props.api5xxAlarmThreshold} requests with a 5xx status within 5 minutes.`,
        api5xx,
        props.api5xxAlarmThreshold,
      ),
    };

    const fn = (f: IFunction, label: string) => ({
      invocations: f.metricInvocations({ period, statistic: 'Sum', label: `${label} invocations` }),
      errors: f.metricErrors({ period, statistic: 'Sum', label: `${label} errors` }),
      throttles: f.metricThrottles({ period, statistic: 'Sum', label: `${label} throttles` }),
      duration: f.metricDuration({ period, statistic: 'Maximum', label: `${label} duration (max)` }),
    });
    const refresh = fn(props.refreshFunction, 'Refresh');
    const dispatch = fn(props.dispatchFunction, 'Dispatch');
    const apiFn = fn(props.apiFunction, 'API function');
    const rule = (metricName: string, label: string) =>
      new Metric({
        namespace: 'AWS/Events',
        metricName,
        dimensionsMap: { RuleName: props.schedule.ruleName },
        statistic: 'Sum',
        period,
        label,
      });

    const wide = { width: 12, height: 6 } as const;
    const third = { width: 8, height: 6 } as const;
    this.dashboard = new Dashboard(this, 'Dashboard', { defaultInterval: Duration.days(1) });
    this.dashboard.addWidgets(
      new AlarmStatusWidget({
        title: 'Alarms',
        alarms: Object.values(this.alarms),
        width: 24,
        height: 3,
      }),
    );
    this.dashboard.addWidgets(
      new GraphWidget({
        title: 'Sweep: due / refreshed / failed',
        left: [
          keeper('Due', { label: 'Due' }),
          keeper('Refreshed', { label: 'Refreshed' }),
          keeper('FailedTransient', { label: 'Failed (transient)' }),
          keeper('ReauthorizationRequired', { label: 'Reauthorization required' }),
        ],
        ...wide,
      }),
      new GraphWidget({
        title: 'Sweep: missed, skipped, backlog',
        left: [
          keeper('Missed', { label: 'Missed (already expired)' }),
          keeper('Skipped', { label: 'Skipped' }),
          keeper('LeaseLost', { label: 'Lease lost' }),
          keeper('GrantOutcomeUnknown', { label: 'Grant outcome unknown (no answer)' }),
        ],
        right: [keeper('Backlog', { statistic: 'Maximum', label: 'Backlog (max)' })],
        ...wide,
      }),
    );
    this.dashboard.addWidgets(
      new GraphWidget({
        title: 'Sweep duration (ms)',
        left: [
          keeper('SweepDuration', { statistic: 'Average', label: 'Average' }),
          keeper('SweepDuration', { statistic: 'Maximum', label: 'Maximum' }),
        ],
        leftAnnotations: [{ value: props.sweepBudget.toMilliseconds(), label: 'Sweep budget' }],
        ...third,
      }),
      new GraphWidget({
        title: 'Refresh function',
        left: [refresh.invocations, refresh.errors, refresh.throttles],
        right: [refresh.duration],
        rightAnnotations: [{ value: props.refreshTimeout.toMilliseconds(), label: 'Timeout' }],
        ...third,
      }),
      new GraphWidget({
        title: 'Fan-out: dispatches and slice queue',
        left: [
          dispatch.invocations,
          dispatch.errors,
          keeper('SweepSlices', { label: 'Slices queued' }),
          props.sliceQueue.metricApproximateNumberOfMessagesVisible({
            period,
            label: 'Slices waiting (max)',
            statistic: 'Maximum',
          }),
        ],
        right: [
          props.sliceQueue.metricApproximateAgeOfOldestMessage({
            period,
            label: 'Oldest slice age (s)',
            statistic: 'Maximum',
          }),
          props.sliceDeadLetterQueue.metricApproximateNumberOfMessagesVisible({
            period,
            label: 'Slice DLQ messages',
          }),
        ],
        ...third,
      }),
      new GraphWidget({
        title: 'Schedule and dead-letter queue',
        left: [
          rule('Invocations', 'Rule invocations'),
          rule('FailedInvocations', 'Rule failed invocations'),
          rule('InvocationsSentToDlq', 'Sent to DLQ'),
        ],
        right: [
          props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period, label: 'DLQ messages' }),
        ],
        ...third,
      }),
    );
    this.dashboard.addWidgets(
      new GraphWidget({
        title: 'Re-authorizations (15 min)',
        left: [
          keeper('ReauthorizationRequired', {
            period: Duration.minutes(15),
            label: 'Reauthorization required',
          }),
        ],
        leftAnnotations: [{ value: props.reauthAlarmThreshold, label: 'Alarm threshold' }],
        ...third,
      }),
      new GraphWidget({
        title: 'Provider client rejected / key unavailable',
        left: [
          keeper('ProviderClientRejected', { period: fiveMinutes, label: 'Provider rejected our client' }),
          keeper('KeyUnavailable', { period: fiveMinutes, label: 'Key unavailable' }),
        ],
        ...third,
      }),
      new GraphWidget({
        title: 'API: tokens served',
        left: [
          keeper('TokensServed', { period: fiveMinutes, label: 'Tokens served' }),
          keeper('OnDemandRefreshes', { period: fiveMinutes, label: 'On-demand refreshes' }),
        ],
        ...third,
      }),
    );
    this.dashboard.addWidgets(
      new GraphWidget({
        title: 'Provider circuits opened, per provider',
        left: [
          keeper('ProviderCircuitOpen', { period: fiveMinutes, label: 'All providers' }),
          new MathExpression({
            expression: `SEARCH('{${METRIC_NAMESPACE},service,providerId} MetricName="ProviderCircuitOpen"', 'Sum', 300)`,
            label: '',
            period: fiveMinutes,
            usingMetrics: {},
          }),
        ],
        ...third,
      }),
      new GraphWidget({
        title: 'API: token latency (ms)',
        left: ['p50', 'p90', 'p99'].map((p) =>
          keeper('TokenLatency', { period: fiveMinutes, statistic: p, label: p }),
        ),
        ...third,
      }),
      new GraphWidget({
        title: 'HTTP API responses',
        left: [
          props.api.metricCount({ period: fiveMinutes, statistic: 'Sum', label: 'Requests' }),
          props.api.metricClientError({ period: fiveMinutes, statistic: 'Sum', label: '4xx' }),
          props.api.metricServerError({ period: fiveMinutes, statistic: 'Sum', label: '5xx' }),
        ],
        leftAnnotations: [{ value: props.api5xxAlarmThreshold, label: '5xx alarm threshold' }],
        ...third,
      }),
      new GraphWidget({
        title: 'API function',
        left: [apiFn.invocations, apiFn.errors, apiFn.throttles],
        right: [apiFn.duration],
        ...third,
      }),
    );
  }

  /** Console link to the dashboard. */
  get dashboardUrl(): string {
    const region = Stack.of(this).region;
    return `https://${region}.console.aws.amazon.com/cloudwatch/home?region=${region}#dashboards:name=${this.dashboard.dashboardName}`;
  }
}
