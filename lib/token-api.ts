import { Validations } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import {
  HttpApi,
  HttpMethod,
  HttpNoneAuthorizer,
  HttpStage,
  LogGroupLogDestination,
  PayloadFormatVersion,
} from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import type { ILogGroup } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

export interface ApiRoute {
  readonly path: string;
  readonly methods: readonly HttpMethod[];
  /**
   * Public routes and why: the health check, each provider's OAuth callback (the state is its
   * credential) and each provider's client metadata document, which its authorization server
   * fetches. Every other route requires SigV4.
   */
  readonly public?: string;
}

/** The routes functions/api serves. */
export const API_ROUTES: readonly ApiRoute[] = [
  {
    path: '/v1/health',
    methods: [HttpMethod.GET],
    public: 'The health check is public by design: it returns no session, token or configuration data.',
  },
  {
    path: '/oauth/callback/{providerId}',
    methods: [HttpMethod.GET],
    public:
      "A provider's OAuth callback is reached by the user's browser: its single-use state is the credential, and it shows no token.",
  },
  {
    path: '/oauth/client-metadata/{providerId}',
    methods: [HttpMethod.GET],
    public:
      "A provider's Client ID Metadata Document is fetched by its authorization server; it holds only public client metadata.",
  },
  { path: '/v1/providers', methods: [HttpMethod.GET] },
  { path: '/v1/providers/{providerId}', methods: [HttpMethod.PUT, HttpMethod.GET] },
  { path: '/v1/sessions', methods: [HttpMethod.GET] },
  { path: '/v1/sweeps', methods: [HttpMethod.GET] },
  { path: '/v1/sweeps/latest', methods: [HttpMethod.GET] },
  { path: '/v1/sessions/{userId}', methods: [HttpMethod.GET] },
  {
    path: '/v1/sessions/{userId}/{providerId}',
    methods: [HttpMethod.PUT, HttpMethod.GET, HttpMethod.DELETE],
  },
  { path: '/v1/sessions/{userId}/{providerId}/token', methods: [HttpMethod.GET] },
  { path: '/v1/sessions/{userId}/{providerId}/authorize', methods: [HttpMethod.POST] },
  { path: '/v1/sessions/{userId}/{providerId}/refresh', methods: [HttpMethod.POST] },
  {
    path: '/v1/sessions/{userId}/{providerId}/connections/{connectionId}',
    methods: [HttpMethod.POST],
  },
];

export interface TokenApiProps {
  readonly handler: IFunction;
  readonly throttle: { readonly rateLimit: number; readonly burstLimit: number };
  readonly accessLogs: ILogGroup;
}

/**
 * The HTTP API (API Gateway v2) in front of the API function: IAM (SigV4) authorization by default on
 * every route, stage-wide throttling, JSON access logs without user ids (route keys, not paths).
 */
export class TokenApi extends Construct {
  readonly api: HttpApi;
  readonly stage: HttpStage;

  constructor(scope: Construct, id: string, props: TokenApiProps) {
    super(scope, id);

    const integration = new HttpLambdaIntegration('Handler', props.handler, {
      payloadFormatVersion: PayloadFormatVersion.VERSION_2_0,
    });
    this.api = new HttpApi(this, 'Api', {
      description: 'tokenkeeper: OAuth sessions and access tokens for backends (SigV4)',
      createDefaultStage: false,
      defaultAuthorizer: new HttpIamAuthorizer(),
      // Signed requests to other paths or methods reach the function too, which answers the
      // contract's 404 not_found / 405 method_not_allowed instead of API Gateway's bare 404.
      defaultIntegration: integration,
    });

    this.stage = new HttpStage(this, 'Stage', {
      httpApi: this.api,
      stageName: '$default',
      autoDeploy: true,
      throttle: { rateLimit: props.throttle.rateLimit, burstLimit: props.throttle.burstLimit },
      accessLogSettings: {
        destination: new LogGroupLogDestination(props.accessLogs),
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            requestTime: '$context.requestTimeEpoch',
            sourceIp: '$context.identity.sourceIp',
            caller: '$context.identity.userArn',
            routeKey: '$context.routeKey',
            status: '$context.status',
            responseLatency: '$context.responseLatency',
            integrationLatency: '$context.integrationLatency',
            integrationError: '$context.integrationErrorMessage',
            authorizerError: '$context.authorizer.error',
          }),
        ),
      },
    });

    for (const route of API_ROUTES) {
      const routes = this.api.addRoutes({
        path: route.path,
        methods: [...route.methods],
        integration,
        ...(route.public ? { authorizer: new HttpNoneAuthorizer() } : {}),
      });
      if (route.public) {
        for (const r of routes) {
          Validations.of(r).acknowledge({ id: 'AwsSolutions-APIG4', reason: route.public });
        }
      }
    }
  }

  /** The base URL backends call, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com/ */
  get url(): string {
    return this.stage.url;
  }
}
