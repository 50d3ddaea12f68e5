// One call of the official Node.js credentials SDK, in a process of its own as an application
// in a pod makes it: the role, OIDC provider, token file and session name come from the
// environment the webhook injects (ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN,
// ALIBABA_CLOUD_OIDC_TOKEN_FILE, ALIBABA_CLOUD_ROLE_SESSION_NAME), the CA from
// NODE_EXTRA_CA_CERTS (node reads it only at start), and the STS endpoint in code: the SDK's
// OIDC provider reads no environment variable for it (only ALIBABA_CLOUD_STS_REGION and
// ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED, which pick an aliyuncs.com host), and it always calls
// `https://<stsEndpoint>/`.
//
// Usage: node sdk_client.mjs STS_HOST:PORT
// Prints one JSON line: what the SDK returned, described without any secret (the key ID's
// first four characters and the values' lengths), or the SDK's error message.

import credentials from '@alicloud/credentials';

const Credential = credentials.default;

function describe(c) {
  return {
    ok: true,
    type: c.type,
    providerName: c.providerName,
    keyIdPrefix: (c.accessKeyId || '').slice(0, 4),
    keyIdLength: (c.accessKeyId || '').length,
    secretLength: (c.accessKeySecret || '').length,
    securityTokenLength: (c.securityToken || '').length,
  };
}

async function main() {
  const stsEndpoint = process.argv[2];
  try {
    const credential = new Credential({ type: 'oidc_role_arn', stsEndpoint });
    console.log(JSON.stringify(describe(await credential.getCredential())));
  } catch (e) {
    // The SDK's messages quote STS's error answer, never the token or a secret.
    console.log(JSON.stringify({ ok: false, error: String(e && e.message).slice(0, 400) }));
  }
}

await main();
