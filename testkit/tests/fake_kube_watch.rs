//! Watches on the fake API server: kube's `watcher` (list, then watch from the list's
//! `resourceVersion`), selectors, bookmarks, timeouts, expiry and the wire format.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{
    DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use rotor_testkit::apiserver::client_from_kubeconfig;
use rotor_testkit::{FakeKube, unique};
use serde_json::json;

/// Longest wait for one event; a watch that delivers nothing fails the test instead of
/// hanging it.
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn secret(name: &str, labels: &[(&str, &str)], value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "k".to_owned(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

async fn next<S, T>(stream: &mut S, what: &str) -> T
where
    S: Stream<Item = T> + Unpin,
{
    tokio::time::timeout(EVENT_WAIT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no event within {EVENT_WAIT:?} while waiting for {what}"))
        .unwrap_or_else(|| panic!("the stream ended while waiting for {what}"))
}

/// The next watcher event that is not the start or end of a (re)list.
async fn next_change<S>(stream: &mut S, what: &str) -> Event<Secret>
where
    S: Stream<Item = Result<Event<Secret>, watcher::Error>> + Unpin,
{
    loop {
        match next(stream, what).await.expect("watcher event") {
            Event::Init | Event::InitDone => continue,
            event => return event,
        }
    }
}

async fn create(secrets: &Api<Secret>, secret: Secret) {
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("creating Secret {} failed: {e}", secret.name_any()));
}

fn value(secret: &Secret) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()["k"].0.clone()).unwrap()
}

#[tokio::test]
async fn a_kube_watcher_lists_then_follows_creates_updates_and_deletes() {
    let kube = FakeKube::start().await;
    let client = client_from_kubeconfig(&kube.kubeconfig)
        .await
        .expect("client");
    let ns = unique("watch");
    kube.create_namespace(&ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    create(&secrets, secret("before", &[], "v0")).await;

    let mut stream = watcher::watcher(secrets.clone(), watcher::Config::default()).boxed();
    // The initial list.
    assert!(matches!(
        next(&mut stream, "Init").await.unwrap(),
        Event::Init
    ));
    match next(&mut stream, "the listed Secret").await.unwrap() {
        Event::InitApply(s) => assert_eq!(s.name_any(), "before"),
        other => panic!("expected InitApply, got {other:?}"),
    }
    assert!(matches!(
        next(&mut stream, "InitDone").await.unwrap(),
        Event::InitDone
    ));

    // Then the watch from the list's resourceVersion: nothing missed, nothing repeated.
    create(&secrets, secret("after", &[], "v1")).await;
    match next_change(&mut stream, "the created Secret").await {
        Event::Apply(s) => assert_eq!((s.name_any(), value(&s)), ("after".into(), "v1".into())),
        other => panic!("expected Apply, got {other:?}"),
    }
    secrets
        .patch(
            "before",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "djI="}})),
        )
        .await
        .unwrap();
    match next_change(&mut stream, "the applied Secret").await {
        Event::Apply(s) => assert_eq!((s.name_any(), value(&s)), ("before".into(), "v2".into())),
        other => panic!("expected Apply, got {other:?}"),
    }
    let before_delete = secrets.get("after").await.unwrap().resource_version();
    secrets
        .delete("after", &DeleteParams::default())
        .await
        .unwrap();
    match next_change(&mut stream, "the deleted Secret").await {
        Event::Delete(s) => {
            assert_eq!(s.name_any(), "after");
            // A deletion has a resourceVersion of its own, after the object's last one.
            let deleted: u64 = s.resource_version().unwrap().parse().unwrap();
            assert!(deleted > before_delete.unwrap().parse::<u64>().unwrap());
        }
        other => panic!("expected Delete, got {other:?}"),
    }
    // Other namespaces are not in this watch.
    let others: Api<Secret> = Api::namespaced(client.clone(), "default");
    create(&others, secret("elsewhere", &[], "x")).await;
    create(&secrets, secret("last", &[], "v3")).await;
    match next_change(&mut stream, "the last Secret").await {
        Event::Apply(s) => assert_eq!(s.name_any(), "last"),
        other => panic!("expected Apply of `last`, got {other:?}"),
    }
}

#[tokio::test]
async fn label_selectors_turn_changes_into_adds_and_deletes() {
    let kube = FakeKube::start().await;
    let client = client_from_kubeconfig(&kube.kubeconfig)
        .await
        .expect("client");
    let ns = unique("labels");
    kube.create_namespace(&ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let config = watcher::Config::default().labels("team=payments");
    let mut stream = watcher::watcher(secrets.clone(), config).boxed();
    assert!(matches!(
        next(&mut stream, "Init").await.unwrap(),
        Event::Init
    ));
    assert!(matches!(
        next(&mut stream, "InitDone").await.unwrap(),
        Event::InitDone
    ));

    secrets
        .create(
            &PostParams::default(),
            &secret("other", &[("team", "ops")], "x"),
        )
        .await
        .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &secret("s", &[("team", "ops")], "x"),
        )
        .await
        .unwrap();
    let relabel = |team: &str| json!({"metadata": {"labels": {"team": team}}});
    secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(relabel("payments")),
        )
        .await
        .unwrap();
    match next_change(&mut stream, "the Secret that started to match").await {
        Event::Apply(s) => assert_eq!(s.name_any(), "s"),
        other => panic!("expected Apply of `s`, got {other:?}"),
    }
    secrets
        .patch("s", &PatchParams::default(), &Patch::Merge(relabel("ops")))
        .await
        .unwrap();
    match next_change(&mut stream, "the Secret that stopped matching").await {
        Event::Delete(s) => assert_eq!(s.name_any(), "s"),
        other => panic!("expected Delete of `s`, got {other:?}"),
    }
}

#[tokio::test]
async fn one_object_by_field_selector_and_namespaces_by_their_real_path() {
    let kube = FakeKube::start().await;
    let client = client_from_kubeconfig(&kube.kubeconfig)
        .await
        .expect("client");
    let ns = unique("one");
    kube.create_namespace(&ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    create(&secrets, secret("watched", &[], "a")).await;
    create(&secrets, secret("ignored", &[], "a")).await;
    let mut one = kube::runtime::watcher::watch_object(secrets.clone(), "watched").boxed();
    let first = next(&mut one, "the watched Secret").await.unwrap();
    assert_eq!(first.map(|s| s.name_any()).as_deref(), Some("watched"));
    secrets
        .delete("ignored", &DeleteParams::default())
        .await
        .unwrap();
    secrets
        .delete("watched", &DeleteParams::default())
        .await
        .unwrap();
    let gone = loop {
        match next(&mut one, "the deletion").await.unwrap() {
            None => break true,
            Some(s) => assert_eq!(s.name_any(), "watched"),
        }
    };
    assert!(gone);

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let list = namespaces.list(&Default::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut events = namespaces
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let fresh = unique("fresh");
    kube.create_namespace(&fresh).await;
    match next(&mut events, "the new Namespace").await.unwrap() {
        WatchEvent::Added(n) => assert_eq!(n.name_any(), fresh),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_timeouts_and_expired_versions() {
    let kube = FakeKube::start().await;
    let client = client_from_kubeconfig(&kube.kubeconfig)
        .await
        .expect("client");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let rv = secrets
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    // kube asks for bookmarks by default (allowWatchBookmarks=true).
    let params = WatchParams::default().timeout(8);
    let mut events = secrets.watch(&params, &rv).await.unwrap().boxed();
    match next(&mut events, "a bookmark").await.unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected BOOKMARK, got {other:?}"),
    }

    // timeoutSeconds ends the stream.
    let started = tokio::time::Instant::now();
    let events = secrets
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap();
    let rest: Vec<_> = tokio::time::timeout(EVENT_WAIT, events.try_collect::<Vec<_>>())
        .await
        .expect("the watch ends at its timeout")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A version older than the log: an ERROR event with 410 Expired, as a real server.
    let mut events = secrets
        .watch(&WatchParams::default(), "1")
        .await
        .unwrap()
        .boxed();
    match next(&mut events, "the expiry").await.unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected ERROR, got {other:?}"),
    }
    let err = secrets.watch(&WatchParams::default(), "not-a-number").await;
    let refused = match err {
        Err(e) => e,
        Ok(s) => s.boxed().try_next().await.expect_err("refused"),
    };
    assert!(refused.to_string().contains("resourceVersion"), "{refused}");
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_a_bookmark() {
    let kube = FakeKube::start().await;
    let client = client_from_kubeconfig(&kube.kubeconfig)
        .await
        .expect("client");
    let ns = unique("stream");
    kube.create_namespace(&ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    create(&secrets, secret("a", &[], "1")).await;
    let config = watcher::Config::default().streaming_lists();
    let mut stream = watcher::watcher(secrets.clone(), config).boxed();
    let mut listed = Vec::new();
    loop {
        match next(&mut stream, "the initial events").await.unwrap() {
            Event::Init => {}
            Event::InitApply(s) => listed.push(s.name_any()),
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(listed, ["a"]);
    create(&secrets, secret("b", &[], "2")).await;
    match next_change(&mut stream, "the Secret after the initial events").await {
        Event::Apply(s) => assert_eq!(s.name_any(), "b"),
        other => panic!("expected Apply, got {other:?}"),
    }
}
