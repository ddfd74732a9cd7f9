//! The web UI's files as the daemon serves them: content types, cache headers and ETags, the
//! page for client routes, JSON 404s for the API, and the `ui.static_dir` override.

use reqwest::header;

use crate::common::client::Api;
use crate::common::daemon::TestEnv;

#[tokio::test]
async fn embedded_files_have_exact_types_and_revalidate_with_etags() {
    let env = TestEnv::new();
    let daemon = env.start();
    let api = Api::new(daemon.base_url());

    let index = api.get("/").await.expect(200);
    assert_eq!(
        index.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(index.headers[header::CACHE_CONTROL], "no-cache");
    let csp = index.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(index.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let etag = index.headers[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    assert!(index.body.as_str().unwrap().contains("/app.js"));

    let again = api
        .send_with(reqwest::Method::GET, "/", None, |r| {
            r.header(header::IF_NONE_MATCH, &etag)
        })
        .await;
    assert_eq!(again.status, 304);
    assert_eq!(again.body, serde_json::Value::Null);

    for (path, kind) in [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/js/conversation.js", "text/javascript; charset=utf-8"),
        (
            "/vendor/dompurify/purify.es.mjs",
            "text/javascript; charset=utf-8",
        ),
        ("/style.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let answer = api.get(path).await.expect(200);
        assert_eq!(answer.headers[header::CONTENT_TYPE], kind, "{path}");
        assert_eq!(answer.headers[header::CACHE_CONTROL], "no-cache", "{path}");
        assert!(answer.headers.contains_key(header::ETAG), "{path}");
    }
}

#[tokio::test]
async fn client_routes_get_the_page_and_api_paths_get_json_404s() {
    let env = TestEnv::new();
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    for route in ["/connect", "/login", "/s/0123-abcd", "/s/0123-abcd/"] {
        let page = api.get(route).await.expect(200);
        assert!(
            page.body
                .as_str()
                .unwrap()
                .contains("<script type=\"module\""),
            "{route}"
        );
    }
    for path in [
        "/api",
        "/api/nope",
        "/api/sessions-ish",
        "/ws",
        "/ws/nope",
        "/ws/sessions/x/more",
        "/app.jss",
    ] {
        api.get(path).await.expect_error(404, "not_found");
    }
    api.post("/anything", serde_json::json!({}))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn static_dir_serves_a_folder_without_caching_and_stays_inside_it() {
    let mut env = TestEnv::new();
    let dir = env.dir.path().join("ui");
    std::fs::create_dir_all(dir.join("js")).unwrap();
    std::fs::write(dir.join("index.html"), "<p>dev page</p>").unwrap();
    std::fs::write(dir.join("js/app.js"), "export {};").unwrap();
    std::fs::write(env.dir.path().join("outside.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(env.dir.path().join("outside.txt"), dir.join("escape.txt")).unwrap();
    env.set("ui.static_dir", dir.to_str().unwrap());
    let daemon = env.start();
    let api = Api::new(daemon.base_url());

    let page = api.get("/s/x").await.expect(200);
    assert_eq!(page.body, "<p>dev page</p>");
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    assert!(!page.headers.contains_key(header::ETAG));
    let js = api.get("/js/app.js").await.expect(200);
    assert_eq!(
        js.headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    // Edits show at once.
    std::fs::write(dir.join("js/app.js"), "export const v = 2;").unwrap();
    assert_eq!(api.get("/js/app.js").await.body, "export const v = 2;");

    api.get("/escape.txt").await.expect_error(404, "not_found");
    api.get("/%2e%2e/outside.txt")
        .await
        .expect_error(404, "not_found");
}
