//! Liveness, readiness, and the security headers every answer carries.

use crate::common::client::Api;
use crate::common::daemon::TestEnv;

#[tokio::test]
async fn healthz_and_readyz_answer_with_security_headers() {
    let env = TestEnv::new();
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    let health = api.get("/healthz").await.expect(200);
    assert_eq!(health.body["status"], "ok");
    let ready = api.get("/readyz").await.expect(200);
    assert_eq!(ready.body["status"], "ready");
    for header in [
        "x-content-type-options",
        "referrer-policy",
        "content-security-policy",
        "x-request-id",
    ] {
        assert!(ready.headers.contains_key(header), "missing {header}");
    }
    let csp = ready.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
}
