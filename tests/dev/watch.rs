//! The watcher and hooks against a real project and php-fpm.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_runs_the_hook_and_a_burst_runs_it_once_or_twice() {
    with_timeout(async {
        let hooks = hook("count", "echo run >> .tqserver/count", "src/**", "none");
        let mut site = Site::start(vec![hooks]).await;
        assert_eq!(site.count("count"), 0);

        let t = Instant::now();
        site.project.write("src/a.php", "<?php // a\n");
        let debounce_plus_1s = Duration::from_millis(150 + 1000);
        let ran = eventually(debounce_plus_1s, || async { site.count("count") == 1 }).await;
        assert!(
            ran,
            "hook did not run within {debounce_plus_1s:?} (count {})",
            site.count("count")
        );
        eprintln!("hook ran {:?} after the write", t.elapsed());

        // Let the first run settle, then 50 writes as fast as they come.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(site.count("count"), 1);
        for i in 0..50 {
            site.project.write(
                &format!("src/burst/f{}.php", i % 10),
                &format!("<?php // {i}\n"),
            );
        }
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let runs = site.count("count") - 1;
        assert!(
            (1..=2).contains(&runs),
            "a burst of 50 writes ran the hook {runs} times"
        );

        // Changes in ignored or unmatched places run nothing.
        site.project.write("vendor/lib.php", "<?php\n");
        site.project.write("public/other.txt", "x");
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(site.count("count"), 1 + runs);
        assert_eq!(
            site.next_control(Duration::from_millis(10)).await,
            None,
            "then: none asks nothing"
        );
        site.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_asks_nothing_and_the_site_keeps_serving() {
    with_timeout(async {
        let hooks = hook(
            "broken",
            "echo building; echo ran >> .tqserver/broken; echo boom >&2; exit 7",
            "src/**",
            "reload",
        );
        let mut site = Site::start(vec![hooks]).await;
        site.project.write("src/a.php", "<?php\n");
        wait_for(Duration::from_secs(3), || async {
            site.count("broken") == 1
        })
        .await;
        assert_eq!(site.next_control(Duration::from_millis(1000)).await, None);
        let r = site.get("/").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["version"], 1);
        site.stop().await;
    })
    .await;
}

/// The pids answering `/` in `n` requests.
async fn worker_pids(site: &Site, n: usize) -> Vec<i64> {
    let mut pids = Vec::new();
    for _ in 0..n {
        pids.push(site.get("/").await.json()["pid"].as_i64().unwrap());
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_hook_with_then_reload_asks_for_a_reload() {
    with_timeout(async {
        let hooks = hook("build", "echo built >> .tqserver/build", "src/**", "reload");
        let mut site = Site::start(vec![hooks]).await;
        let before = worker_pids(&site, 4).await;
        site.project.write("src/a.php", "<?php\n");
        let request = site.next_control(Duration::from_secs(3)).await;
        let Some(Control::Reload { reason }) = request else {
            panic!("expected a reload request, got {request:?}")
        };
        assert!(reason.contains("build"), "{reason}");
        assert_eq!(site.count("build"), 1);

        // Act as the supervisor: SIGUSR2 php-fpm; new workers answer.
        site.php.signal(nix::sys::signal::Signal::SIGUSR2);
        let reloaded = eventually(Duration::from_secs(10), || async {
            match try_get(site.port, "/").await {
                Some(r) if r.status == 200 => !before.contains(&r.json()["pid"].as_i64().unwrap()),
                _ => false,
            }
        })
        .await;
        assert!(reloaded, "no new worker after the reload");
        site.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_config_file_asks_for_a_reload() {
    with_timeout(async {
        let hooks = hook("count", "echo run >> .tqserver/count", "src/**", "none");
        let mut site = Site::start(vec![hooks]).await;
        let yaml = site.project.config_path();

        // Written in place.
        site.project.set("php_fpm.pool.max_children", 3);
        site.project.write("tqsup.yaml", &site.project.yaml());
        let request = site.next_control(Duration::from_secs(3)).await;
        assert!(
            matches!(&request, Some(Control::Reload { reason }) if reason.contains("config")),
            "{request:?}"
        );

        // An editor's save: write a temp file, rename it over the config,
        // now with a new hook. The new hook applies to the next change.
        let second = hook("second", "echo run >> .tqserver/second", "lib/**", "none");
        site.project.config["dev"]["hooks"]
            .as_array_mut()
            .unwrap()
            .push(second);
        let tmp: PathBuf = site.project.join("tqsup.yaml.swp-tmp");
        std::fs::write(&tmp, site.project.yaml()).unwrap();
        std::fs::rename(&tmp, &yaml).unwrap();
        let request = site.next_control(Duration::from_secs(3)).await;
        assert!(
            matches!(request, Some(Control::Reload { .. })),
            "{request:?}"
        );
        site.project.write("lib/x.php", "<?php\n");
        wait_for(Duration::from_secs(3), || async {
            site.count("second") == 1
        })
        .await;

        // A broken edit: still a reload request (the supervisor validates
        // and keeps the old config); the site keeps serving.
        site.project
            .write("tqsup.yaml", "php_fpm: [not, a, mapping\n");
        let request = site.next_control(Duration::from_secs(3)).await;
        assert!(
            matches!(request, Some(Control::Reload { .. })),
            "{request:?}"
        );
        assert_eq!(site.get("/").await.status, 200);
        // Hooks from the last good config still run.
        site.project.write("src/b.php", "<?php\n");
        wait_for(Duration::from_secs(3), || async {
            site.count("count") == 1
        })
        .await;
        site.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_mode_sees_changes_too() {
    with_timeout(async {
        let hooks = hook("count", "echo run >> .tqserver/count", "src/**", "none");
        let site = Site::start_with(vec![hooks], json!({ "poll_interval_ms": 100 })).await;
        site.project.write("src/a.php", "<?php\n");
        // One poll interval, the debounce, and a second.
        let ran = eventually(Duration::from_millis(100 + 150 + 1000), || async {
            site.count("count") == 1
        })
        .await;
        assert!(ran, "hook did not run in polling mode");
        site.project.write("src/new/dir/b.php", "<?php\n");
        wait_for(Duration::from_secs(3), || async {
            site.count("count") == 2
        })
        .await;
        site.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_config_dir_never_triggers_hooks() {
    with_timeout(async {
        // An ignore list without `.tqserver` and a hook on everything.
        let hooks = hook("all", "mkdir -p out && echo run >> out/count", "**", "none");
        let site = Site::start_with(vec![hooks], json!({ "ignore": [".git", "out"] })).await;
        // What the supervisor does at each reload: rewrite dev.config_dir.
        site.project
            .write(".tqserver/phpfpm/pool.d/www.conf", "; rendered\n");
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(site.count("../out/count"), 0);
        // Anything else still runs the hook, once (out/ is ignored).
        site.project.write("other.txt", "x");
        wait_for(Duration::from_secs(3), || async {
            site.count("../out/count") == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(site.count("../out/count"), 1);
        site.stop().await;
    })
    .await;
}

/// 100 writes into a `.gitignore`d directory that a hook's glob covers:
/// no batch, no hook run. A file beside it still runs the hook; with
/// `dev.watch.gitignore: false` the same directory does too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitignored_paths_trigger_nothing_and_others_still_run_hooks() {
    with_timeout(async {
        for honour in [true, false] {
            let hooks = hook("count", "echo run >> .tqserver/count", "src/**", "none");
            let watch = if honour {
                json!({})
            } else {
                json!({ "gitignore": false })
            };
            let site = Site::start_with(vec![hooks], watch).await;
            site.project
                .write(".gitignore", "/src/generated/\n*.cache\n");
            // The edited .gitignore is read again at its own change event.
            tokio::time::sleep(Duration::from_millis(400)).await;
            for i in 0..100 {
                site.project.write(
                    &format!("src/generated/f{}.php", i % 7),
                    &format!("<?php // {i}\n"),
                );
            }
            site.project.write("src/x.cache", "1");
            tokio::time::sleep(Duration::from_millis(1200)).await;
            if honour {
                assert_eq!(site.count("count"), 0, "ignored writes ran the hook");
                site.project.write("src/a.php", "<?php // a\n");
                let ran = eventually(Duration::from_secs(3), || async {
                    site.count("count") == 1
                })
                .await;
                assert!(ran, "a non-ignored file did not run the hook");
                // Un-ignored by an edit: watched from then on.
                site.project.write(".gitignore", "*.cache\n");
                tokio::time::sleep(Duration::from_millis(400)).await;
                site.project.write("src/generated/later.php", "<?php\n");
                let ran = eventually(Duration::from_secs(3), || async {
                    site.count("count") == 2
                })
                .await;
                assert!(ran, "an un-ignored directory did not run the hook");
            } else {
                assert!(
                    site.count("count") >= 1,
                    "with gitignore: false the directory is watched"
                );
            }
            site.stop().await;
        }
    })
    .await;
}
