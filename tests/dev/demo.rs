//! The demo app (`config/dev.yaml` + `config/demo/`, the README's run
//! command) served through the dev front by a real php-fpm.

use super::*;

/// Copies `config/dev.yaml` and `config/demo` into a temp project
/// (world-readable for the pool).
fn demo_project() -> TqsupProject {
    let project = Project::new();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    for rel in [
        "dev.yaml",
        "demo/public/index.php",
        "demo/public/style.css",
        "demo/assets/app.css",
    ] {
        let text = std::fs::read_to_string(src.join(rel)).unwrap();
        project.write(rel, &text);
    }
    // Its config is the shipped file, as it is.
    TqsupProject::in_project(project)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_app_is_served() {
    with_timeout(async {
        let project = demo_project();
        let (config, _) =
            config::load(&project.join("dev.yaml")).expect("the demo config is valid");
        assert_eq!(config.dev.http_listen.as_deref(), Some("127.0.0.1:8000"));
        assert!(config.forward.enabled);
        assert_ne!(
            config.forward.listen,
            config::Endpoint::Tcp("127.0.0.1:9000".into())
        );
        assert!(!config.dev.hooks.is_empty());
        let site = Site::launch(project, config, free_port()).await;

        let r = site.get("/").await;
        assert_eq!(r.status, 200);
        let page = r.text();
        assert!(
            page.contains("PHP version") && page.contains("8."),
            "{page}"
        );
        assert!(page.contains("Requests per worker"), "{page}");

        let r = site.get("/hello/world?x=1").await;
        assert_eq!(r.status, 200);
        assert!(r.text().contains("Hello, world"));
        assert!(r.text().contains("/hello/world?x=1"));

        assert_eq!(
            site.get("/style.css").await.header("content-type"),
            Some("text/css")
        );
        let r = site.get("/redirect").await;
        assert_eq!((r.status, r.header("location")), (302, Some("/")));
        assert_eq!(site.get("/api").await.json()["uri"], "/api");
        assert_eq!(site.get("/nope").await.status, 404);

        // The demo's hook builds public/build/app.css; the page links it.
        let css = std::fs::read_to_string(site.project.join("demo/assets/app.css")).unwrap();
        site.project
            .write("demo/assets/app.css", &(css + "\n.x { color: blue }\n"));
        wait_for(Duration::from_secs(3), || async {
            site.get("/build/app.css")
                .await
                .text()
                .contains(".x { color: blue }")
        })
        .await;
        assert!(site.get("/").await.text().contains("/build/app.css"));
        site.stop().await;
    })
    .await;
}
