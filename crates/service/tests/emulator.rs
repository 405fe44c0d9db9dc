//! The Messenger / Dialogflow emulator: thread control, Send API rules, webhook delivery, the
//! emulated Dialogflow integration and the Dialogflow / OAuth APIs. wiremock plays the
//! service's `/messenger` and `/fulfillment` endpoints.

mod common;

use std::time::Duration;

use common::emulated::*;
use handover_emulator::{Emulator, EmulatorConfig, PAGE_INBOX_APP_ID};
use messenger_handover::messenger::signature::appsecret_proof;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PSID: &str = "7000000000000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_message_to_an_idle_thread_goes_to_the_bot_and_standby_to_the_companion() {
    let (emu, companion) = start_with_companion().await;
    let cfg = emu.config();
    assert_eq!(emu.owner(PSID), None);

    emu.user_says(PSID, "hello").await;

    assert_eq!(emu.owner(PSID).as_deref(), Some(cfg.bot_app_id.as_str()));
    let seen = emu.messages_to_user(PSID);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].from_app_id, cfg.bot_app_id);
    assert!(seen[0].text.starts_with("Hi! I'm the demo bot"));

    let ds = companion.deliveries().await;
    assert_eq!(
        ds.len(),
        2,
        "standby message, then the echo of the bot's reply: {ds:?}"
    );
    assert_eq!(ds[0].0, "standby");
    assert_eq!(ds[0].1["message"]["text"], "hello");
    assert_eq!(ds[0].1["sender"]["id"], PSID);
    assert_eq!(ds[0].1["recipient"]["id"], cfg.page_id.as_str());
    assert_eq!(ds[1].0, "messaging");
    let echo = &ds[1].1["message"];
    assert_eq!(echo["is_echo"], true);
    assert_eq!(echo["app_id"].to_string(), cfg.bot_app_id);
    assert_eq!(ds[1].1["sender"]["id"], cfg.page_id.as_str());

    // The integration's generic context carries the PSID.
    let ctxs = emu.contexts(PSID);
    let generic = ctxs.iter().find(|c| c.0 == "generic").expect("generic");
    assert_eq!(generic.1, 4);
    assert_eq!(generic.2["facebook_sender_id"], PSID);
    assert!(emu.errors().is_empty(), "{:?}", emu.errors());
    assert!(
        emu.session_of(PSID)
            .starts_with("projects/demo-agent/agent/sessions/")
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_to_the_inbox_reaches_the_companion_and_then_the_bot_may_not_send() {
    let (emu, companion) = start_with_companion().await;
    let cfg = emu.config();
    let graph = BotGraph::new(&emu);
    emu.user_says(PSID, "hi").await;

    let (status, body) = graph
        .post(
            "pass_thread_control",
            json!({ "recipient": { "id": PSID }, "target_app_id": 263902037430900u64, "metadata": "handover" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({ "success": true })));
    assert_eq!(emu.owner(PSID).as_deref(), Some(PAGE_INBOX_APP_ID));
    emu.flush().await;
    let (channel, ev) = companion.only("pass_thread_control").await;
    assert_eq!(channel, "messaging");
    assert_eq!(ev["new_owner_app_id"], PAGE_INBOX_APP_ID);
    assert_eq!(ev["previous_owner_app_id"], cfg.bot_app_id.as_str());
    assert_eq!(ev["metadata"], "handover");

    // The bot app is no longer the owner: Meta's (#10) / 2018300.
    let (status, body) = graph
        .post(
            "messages",
            json!({ "recipient": { "id": PSID }, "messaging_type": "RESPONSE", "message": { "text": "still here?" } }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], 10);
    assert_eq!(body["error"]["error_subcode"], 2018300);
    assert_eq!(body["error"]["type"], "OAuthException");
    assert_eq!(
        body["error"]["message"],
        "(#10) Message failed to send because another app is controlling this thread now."
    );
    assert!(body["error"]["fbtrace_id"].is_string());
    assert!(emu.errors().iter().any(|e| e.contains("2018300")));
    // A pass by a non-owner fails too.
    let (status, _) = graph
        .post(
            "pass_thread_control",
            json!({ "recipient": { "id": PSID }, "target_app_id": cfg.bot_app_id }),
        )
        .await;
    assert_eq!(status, 400);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_with_a_target_app_id_is_a_protocol_error_and_a_plain_take_works() {
    let (emu, companion) = start_with_companion().await;
    let cfg = emu.config();
    let graph = BotGraph::new(&emu);
    emu.user_says(PSID, "hi").await;
    graph
        .post(
            "pass_thread_control",
            json!({ "recipient": { "id": PSID }, "target_app_id": PAGE_INBOX_APP_ID }),
        )
        .await;

    let (status, body) = graph
        .post(
            "take_thread_control",
            json!({ "recipient": { "id": PSID }, "target_app_id": PAGE_INBOX_APP_ID }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], 100);
    assert_eq!(
        body["error"]["message"],
        "(#100) Param target_app_id is not supported by take_thread_control"
    );
    assert!(emu.errors().iter().any(|e| e.contains("target_app_id")));
    assert_eq!(emu.owner(PSID).as_deref(), Some(PAGE_INBOX_APP_ID));

    let (status, body) = graph
        .post(
            "take_thread_control",
            json!({ "recipient": { "id": PSID }, "metadata": "back to bot" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({ "success": true })));
    assert_eq!(emu.owner(PSID).as_deref(), Some(cfg.bot_app_id.as_str()));
    emu.flush().await;
    let (_, take) = companion.only("take_thread_control").await;
    assert_eq!(take["new_owner_app_id"], cfg.bot_app_id.as_str());
    assert_eq!(take["previous_owner_app_id"], PAGE_INBOX_APP_ID);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_needs_the_take_control_toggle() {
    let emu = Emulator::start(EmulatorConfig {
        bot_can_take_control: false,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let graph = BotGraph::new(&emu);
    emu.user_says(PSID, "hi").await;
    emu.agent_replies(PSID, "Hello, Sam here").await;
    let (status, body) = graph
        .post(
            "take_thread_control",
            json!({ "recipient": { "id": PSID } }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], 200);
    assert_eq!(emu.owner(PSID).as_deref(), Some(PAGE_INBOX_APP_ID));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reply_while_the_bot_owns_makes_the_inbox_take_control() {
    let (emu, companion) = start_with_companion().await;
    let cfg = emu.config();
    emu.user_says(PSID, "hi").await;

    emu.agent_replies(PSID, "Hi, I'm Sam from support").await;

    assert_eq!(emu.owner(PSID).as_deref(), Some(PAGE_INBOX_APP_ID));
    let (_, ev) = companion.only("take_thread_control").await;
    let ds = companion.deliveries().await;
    assert_eq!(ev["previous_owner_app_id"], cfg.bot_app_id.as_str());
    assert_eq!(ev["new_owner_app_id"], PAGE_INBOX_APP_ID);
    let last = ds.last().expect("an echo");
    assert_eq!(last.1["message"]["is_echo"], true);
    assert_eq!(last.1["message"]["app_id"].to_string(), PAGE_INBOX_APP_ID);
    assert_eq!(last.1["message"]["text"], "Hi, I'm Sam from support");
    let seen = emu.messages_to_user(PSID);
    assert_eq!(seen.last().unwrap().from_app_id, PAGE_INBOX_APP_ID);

    // Now the user's messages reach the companion on standby only; the bot is not told.
    let before = emu.messages_to_user(PSID).len();
    emu.user_says(PSID, "my order is late").await;
    assert_eq!(
        emu.messages_to_user(PSID).len(),
        before,
        "the bot must not answer"
    );
    let ds = companion.deliveries().await;
    assert_eq!(ds.last().unwrap().0, "standby");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_marks_done_passes_the_thread_back_to_the_bot() {
    let (emu, companion) = start_with_companion().await;
    let cfg = emu.config();
    emu.user_says(PSID, "hi").await;
    emu.agent_replies(PSID, "Sam here").await;

    emu.agent_marks_done(PSID).await;

    assert_eq!(emu.owner(PSID).as_deref(), Some(cfg.bot_app_id.as_str()));
    let (_, ev) = companion.only("pass_thread_control").await;
    assert_eq!(ev["new_owner_app_id"], cfg.bot_app_id.as_str());
    assert_eq!(ev["previous_owner_app_id"], PAGE_INBOX_APP_ID);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_requesting_control_notifies_the_companion() {
    let (emu, companion) = start_with_companion().await;
    let cfg = emu.config();
    emu.user_says(PSID, "hi").await;
    emu.inbox_requests_control(PSID).await;
    let (_, request) = companion.only("request_thread_control").await;
    assert_eq!(
        request["requested_owner_app_id"].to_string(),
        PAGE_INBOX_APP_ID
    );
    assert_eq!(emu.owner(PSID).as_deref(), Some(cfg.bot_app_id.as_str()));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_owner_reports_idle_and_owned_threads() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let cfg = emu.config();
    let graph = BotGraph::new(&emu);
    emu.user_says(PSID, "hi").await;

    let (status, body) = graph.get("thread_owner", &[("recipient", PSID)]).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"][0]["thread_owner"]["app_id"],
        cfg.bot_app_id.as_str()
    );
    assert!(
        body["data"][0]["thread_owner"]["expiration"]
            .as_i64()
            .unwrap()
            > 0
    );

    let (status, _) = graph
        .post(
            "release_thread_control",
            json!({ "recipient": { "id": PSID } }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = graph.get("thread_owner", &[("recipient", PSID)]).await;
    assert_eq!(body, json!({ "data": [] }));
    assert_eq!(emu.owner(PSID), None);

    // On an idle thread the default app (the bot) may still send.
    let (status, body) = graph
        .post(
            "messages",
            json!({ "recipient": { "id": PSID }, "messaging_type": "RESPONSE", "message": { "text": "ping" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["message_id"].as_str().unwrap().starts_with("m_"));
    assert_eq!(body["recipient_id"], PSID);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_proofs_are_rejected() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let cfg = emu.config();
    let graph = BotGraph::new(&emu);
    emu.user_says(PSID, "hi").await;
    let body = json!({ "recipient": { "id": PSID } });

    let wrong = appsecret_proof("not-the-secret", &cfg.page_token);
    let (status, resp) = graph
        .post_as("take_thread_control", &cfg.page_token, &wrong, body.clone())
        .await;
    assert_eq!(status, 400);
    assert_eq!(resp["error"]["code"], 100);
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("appsecret_proof")
    );

    let (status, resp) = graph
        .post_as("take_thread_control", &cfg.page_token, "", body.clone())
        .await;
    assert_eq!((status, resp["error"]["code"].clone()), (400, json!(100)));

    let proof = appsecret_proof(&cfg.bot_app_secret, "some-other-token");
    let (status, resp) = graph
        .post_as("take_thread_control", "some-other-token", &proof, body)
        .await;
    assert_eq!((status, resp["error"]["code"].clone()), (400, json!(190)));
    assert_eq!(resp["error"]["type"], "OAuthException");
    assert_eq!(emu.errors().len(), 3, "{:?}", emu.errors());
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_api_enforces_messaging_type_and_the_24_hour_window() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let graph = BotGraph::new(&emu);
    emu.user_says(PSID, "hi").await;
    let (status, body) = graph
        .post(
            "messages",
            json!({ "recipient": { "id": PSID }, "message": { "text": "no type" } }),
        )
        .await;
    assert_eq!((status, body["error"]["code"].clone()), (400, json!(100)));

    emu.set_last_user_message_age(PSID, Duration::from_secs(25 * 3600));
    assert_eq!(
        emu.owner(PSID),
        None,
        "a thread is idle 24 h after the last user message"
    );
    let (status, body) = graph
        .post(
            "messages",
            json!({ "recipient": { "id": PSID }, "messaging_type": "UPDATE", "message": { "text": "late" } }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], 10);
    assert_eq!(body["error"]["error_subcode"], 2018278);

    let (status, body) = graph
        .post(
            "messages",
            json!({ "recipient": { "id": "unknown-psid" }, "messaging_type": "RESPONSE", "message": { "text": "x" } }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["error_subcode"].clone()),
        (400, json!(2018001))
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_fields_subscriptions_and_debug_token() {
    let emu = Emulator::start(EmulatorConfig {
        page_scopes: vec!["pages_show_list".into()],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let cfg = emu.config();
    let graph = BotGraph::new(&emu);

    let r = graph
        .http
        .get(format!("{}/v25.0/me", emu.base_url()))
        .query(&[
            ("fields", "messaging_feature_status"),
            ("access_token", graph.token.as_str()),
            ("appsecret_proof", graph.proof.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], cfg.page_id.as_str());
    assert_eq!(body["messaging_feature_status"]["msgr_multi_app"], true);
    assert!(body.get("name").is_none());

    let (_, body) = graph.get("subscribed_apps", &[]).await;
    let companion = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == cfg.companion_app_id.as_str())
        .expect("companion listed");
    assert_eq!(
        companion["subscribed_fields"],
        json!(["standby", "messaging_handovers", "message_echoes"])
    );
    // Without pages_manage_metadata the Page cannot be (re)subscribed.
    let (status, _) = graph
        .post(
            "subscribed_apps",
            json!({ "subscribed_fields": "standby,messaging_handovers" }),
        )
        .await;
    assert_eq!(status, 400);

    let r = graph
        .http
        .get(format!("{}/v25.0/debug_token", emu.base_url()))
        .query(&[
            ("input_token", cfg.page_token.as_str()),
            (
                "access_token",
                &format!("{}|{}", cfg.bot_app_id, cfg.bot_app_secret),
            ),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"]["is_valid"], true);
    assert_eq!(body["data"]["type"], "PAGE");
    assert_eq!(body["data"]["profile_id"], cfg.page_id.as_str());
    assert_eq!(body["data"]["scopes"], json!(["pages_show_list"]));

    // And without pages_messaging, nothing can be sent.
    emu.user_says(PSID, "hi").await;
    assert!(emu.messages_to_user(PSID).is_empty());
    assert!(emu.errors().iter().any(|e| e.contains("pages_messaging")));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_delivery_that_fails_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/messenger"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/messenger"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&server)
        .await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.set_companion_webhook(&format!("{}/messenger", server.uri()));
    emu.user_says(PSID, "hmm").await;
    let log = emu.log();
    let first = log
        .iter()
        .find(|e| e.call == "webhook → companion")
        .expect("a delivery");
    assert!(first.ok);
    assert!(first.detail.ends_with("500, 500, 200"), "{}", first.detail);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_integration_calls_fulfillment_for_a_handover_and_applies_the_response() {
    let service = fulfillment(ResponseTemplate::new(200).set_body_json(json!({
        "fulfillmentText": "A person will be with you shortly.",
        "outputContexts": [
            { "name": "projects/demo-agent/agent/sessions/x/contexts/human_handover", "lifespanCount": 10, "parameters": { "at": "now" } },
            { "name": "projects/demo-agent/agent/sessions/x/contexts/order-followup", "lifespanCount": 0 }
        ]
    })))
    .await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.set_fulfillment(
        &format!("{}/fulfillment", service.uri()),
        Some("Bearer fulfil-secret".into()),
    );
    emu.user_says(PSID, "where is my order 1042").await;
    assert!(
        emu.contexts(PSID)
            .iter()
            .any(|c| c.0 == "order-followup" && c.1 == 5)
    );
    emu.user_says(PSID, "I want to talk to a human").await;

    let reqs = service.received_requests().await.unwrap();
    assert_eq!(
        reqs.len(),
        1,
        "only the webhook-enabled intent calls fulfillment"
    );
    assert_eq!(
        reqs[0]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        "Bearer fulfil-secret"
    );
    let wr: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(wr["session"], emu.session_of(PSID).as_str());
    assert_eq!(wr["queryResult"]["action"], "input.handover");
    assert_eq!(wr["queryResult"]["intent"]["displayName"], "Human handover");
    assert_eq!(wr["queryResult"]["queryText"], "I want to talk to a human");
    assert_eq!(wr["originalDetectIntentRequest"]["source"], "facebook");
    let data = &wr["originalDetectIntentRequest"]["payload"]["data"];
    assert_eq!(data["sender"]["id"], PSID);
    assert_eq!(data["recipient"]["id"], emu.config().page_id.as_str());
    assert_eq!(data["message"]["text"], "I want to talk to a human");
    let names: Vec<String> = wr["queryResult"]["outputContexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let session = emu.session_of(PSID);
    assert!(names.contains(&format!("{session}/contexts/generic")));
    assert!(names.contains(&format!("{session}/contexts/order-followup")));

    let seen = emu.messages_to_user(PSID);
    assert_eq!(
        seen.last().unwrap().text,
        "A person will be with you shortly."
    );
    let ctxs = emu.contexts(PSID);
    assert!(
        ctxs.iter()
            .any(|c| c.0 == "human_handover" && c.1 == 10 && c.2["at"] == "now")
    );
    assert!(
        !ctxs.iter().any(|c| c.0 == "order-followup"),
        "lifespan 0 deletes"
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_fulfillment_falls_back_to_the_static_text() {
    let service = fulfillment(ResponseTemplate::new(500)).await;
    let emu = Emulator::start(EmulatorConfig {
        fulfillment_url: Some(format!("{}/fulfillment", service.uri())),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    emu.user_says(PSID, "agent please").await;
    assert_eq!(
        emu.messages_to_user(PSID).last().unwrap().text,
        "Connecting you with a person…"
    );
    assert!(emu.log().iter().any(|e| e.call == "fulfillment" && !e.ok));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postback_reaches_the_bot_with_its_payload_and_the_companion_without() {
    let (emu, companion) = start_with_companion().await;
    emu.user_says(PSID, "hi").await;
    emu.agent_replies(PSID, "Sam here").await;
    emu.take_errors();

    emu.user_taps_postback(PSID, "Back to the bot", "BACK_TO_BOT")
        .await;

    let (channel, postback) = companion.only("postback").await;
    assert_eq!(channel, "standby");
    assert_eq!(postback["title"], "Back to the bot");
    assert!(postback.get("payload").is_none());
    // The integration matched "Return to bot" but could not answer: the inbox owns the thread.
    assert!(
        emu.log()
            .iter()
            .any(|e| e.call == "detectIntent" && e.detail.contains("input.return_to_bot"))
    );
    assert!(emu.errors().iter().any(|e| e.contains("2018300")));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contexts_api_needs_an_issued_token() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.user_says(PSID, "order 7").await;
    let session = emu.session_of(PSID);
    let http = reqwest::Client::new();
    let url = format!("{}/v2/{session}/contexts", emu.base_url());

    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    let r = http
        .get(&url)
        .bearer_auth("ya29.made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(emu.errors().len(), 2);

    let t = token(&emu).await;
    let body = json_of(http.get(&url).bearer_auth(&t)).await;
    let ids: Vec<&str> = body["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(ids, vec!["generic", "order-followup"]);

    // Create (override), get, delete one, 404 after.
    let r = http
        .post(&url)
        .bearer_auth(&t)
        .json(&json!({ "name": format!("{session}/contexts/Bot_Active"), "lifespanCount": 3, "parameters": { "k": 1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["name"],
        format!("{session}/contexts/bot_active")
    );
    assert!(
        emu.contexts(PSID)
            .iter()
            .any(|c| c.0 == "bot_active" && c.1 == 3)
    );
    let one = format!("{url}/bot_active");
    let body = json_of(http.get(&one).bearer_auth(&t)).await;
    assert_eq!(body["lifespanCount"], 3);
    let r = http.delete(&one).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http.get(&one).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["status"],
        "NOT_FOUND"
    );

    // The environment/user form of the same session, then delete all.
    let env_url = url.replace(
        "/agent/sessions/",
        "/agent/environments/draft/users/-/sessions/",
    );
    let r = http.delete(&env_url).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(emu.contexts(PSID).is_empty());

    // Another project is not ours.
    let other = url.replace("projects/demo-agent/", "projects/someone-else/");
    let r = http.get(&other).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // The metadata server issues tokens too, but only with its header.
    let r = http.get(emu.metadata_token_url()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = http
        .get(emu.metadata_token_url())
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    let mt = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http.get(&url).bearer_auth(&mt).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let agent = json_of(
        http.get(format!("{}/v2/projects/demo-agent/agent", emu.base_url()))
            .bearer_auth(&mt),
    )
    .await;
    assert_eq!(agent["parent"], "projects/demo-agent");
    assert_eq!(agent["timeZone"], "Europe/Paris");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_intent_matches_input_handover_and_runs_the_webhook() {
    let service = fulfillment(ResponseTemplate::new(200).set_body_json(json!({
        "fulfillmentText": "On it."
    })))
    .await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.set_fulfillment(&format!("{}/fulfillment", service.uri()), None);
    let t = token(&emu).await;
    let session =
        "projects/demo-agent/locations/global/agent/sessions/3c32f610-3f2b-4bd8-9712-43eb69c06c43";
    let r = reqwest::Client::new()
        .post(format!("{}/v2/{session}:detectIntent", emu.base_url()))
        .bearer_auth(&t)
        .json(&json!({
            "queryInput": { "text": { "text": "Can I speak to a person?", "languageCode": "en" } },
            "queryParams": { "payload": { "source": "test" } }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["responseId"].is_string());
    assert_eq!(body["queryResult"]["action"], "input.handover");
    assert_eq!(body["queryResult"]["fulfillmentText"], "On it.");
    assert_eq!(body["webhookStatus"]["code"], 0);
    let reqs = service.received_requests().await.unwrap();
    let wr: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(wr["session"], session);
    assert_eq!(
        wr["originalDetectIntentRequest"]["payload"]["source"],
        "test"
    );
    // Nothing was sent to Messenger.
    assert!(emu.log().iter().all(|e| e.call != "send_api"));
    emu.stop().await;
}

/// A minimal "service" whose fulfillment handler passes the thread to the inbox at once,
/// before answering: the integration's reply then fails, as it would on Meta (this is why the
/// service waits HANDOVER_PASS_DELAY_MS before passing).
async fn eager_service(
    graph_base: String,
    page: String,
    token: String,
    proof: String,
) -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    #[derive(Clone)]
    struct G {
        url: String,
        token: String,
        proof: String,
    }
    let g = G {
        url: format!("{graph_base}/v25.0/{page}/pass_thread_control"),
        token,
        proof,
    };
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        App::new().app_data(web::Data::new(g.clone())).route(
            "/fulfillment",
            web::post().to(|g: web::Data<G>, body: web::Json<Value>| async move {
                let psid =
                    body["originalDetectIntentRequest"]["payload"]["data"]["sender"]["id"].clone();
                let _ = reqwest::Client::new()
                    .post(&g.url)
                    .query(&[("access_token", &g.token), ("appsecret_proof", &g.proof)])
                    .json(
                        &json!({ "recipient": { "id": psid }, "target_app_id": PAGE_INBOX_APP_ID }),
                    )
                    .send()
                    .await;
                HttpResponse::Ok().json(json!({ "fulfillmentText": "Passing you on." }))
            }),
        )
    })
    .listen(listener)
    .unwrap()
    .workers(1)
    .disable_signals()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}/fulfillment"), handle)
}

#[tokio::test]
async fn passing_before_the_integration_replies_makes_the_reply_fail() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let cfg = emu.config();
    let graph = BotGraph::new(&emu);
    let (url, handle) = eager_service(
        emu.base_url(),
        cfg.page_id.clone(),
        graph.token.clone(),
        graph.proof.clone(),
    )
    .await;
    emu.set_fulfillment(&url, None);

    emu.user_says(PSID, "human please").await;

    assert_eq!(emu.owner(PSID).as_deref(), Some(PAGE_INBOX_APP_ID));
    assert!(
        emu.messages_to_user(PSID).is_empty(),
        "the reply could not be sent"
    );
    assert!(
        emu.errors().iter().any(|e| e.contains("2018300")),
        "{:?}",
        emu.errors()
    );
    let calls: Vec<String> = emu.log().iter().map(|e| e.call.clone()).collect();
    let pass = calls
        .iter()
        .position(|c| c == "pass_thread_control")
        .unwrap();
    let send = calls.iter().position(|c| c == "send_api").unwrap();
    assert!(pass < send, "{calls:?}");
    handle.stop(false).await;
    emu.stop().await;
}

#[actix_web::test]
async fn the_emulator_runs_under_the_actix_runtime_and_settles() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.user_says(PSID, "hello").await;
    emu.settle(Duration::from_millis(50), Duration::from_secs(2))
        .await;
    assert_eq!(emu.messages_to_user(PSID).len(), 1);
    let log = emu.take_log();
    assert_eq!(log[0].call, "message");
    assert_eq!(log[0].actor, "user");
    assert!(emu.log().is_empty());
    assert!(
        emu.wait_for_owner(
            PSID,
            Some(&emu.config().bot_app_id),
            Duration::from_millis(100)
        )
        .await
    );
    // A dropped emulator shuts itself down; a stopped one refuses connections.
    let base = emu.base_url();
    emu.stop().await;
    assert!(reqwest::Client::new().get(&base).send().await.is_err());
}

/// The whole story, with the test playing the service: handover, agent, back to bot, context
/// reset, welcome back. Run with `--nocapture` to see the transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_round_trip_done_right_leaves_no_errors() {
    let server = companion().await;
    Mock::given(method("POST"))
        .and(path("/fulfillment"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "fulfillmentText": "Connecting you with a person…"
        })))
        .mount(&server)
        .await;
    let emu = Emulator::start(EmulatorConfig {
        companion_webhook_url: Some(format!("{}/messenger", server.uri())),
        fulfillment_url: Some(format!("{}/fulfillment", server.uri())),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let cfg = emu.config();
    let graph = BotGraph::new(&emu);

    emu.user_says(PSID, "hi").await;
    emu.user_says(PSID, "order 1042?").await;
    emu.user_says(PSID, "I need a human").await;
    // The service passes after the integration's reply went out.
    let (s, _) = graph
        .post(
            "pass_thread_control",
            json!({ "recipient": { "id": PSID }, "target_app_id": PAGE_INBOX_APP_ID }),
        )
        .await;
    assert_eq!(s, 200);
    emu.agent_replies(PSID, "Hi, Sam here. Let me check.").await;
    emu.user_says(PSID, "thanks, back to bot").await;
    // The service saw the standby message; it takes control, resets contexts, welcomes back.
    let (s, _) = graph
        .post(
            "take_thread_control",
            json!({ "recipient": { "id": PSID } }),
        )
        .await;
    assert_eq!(s, 200);
    let t = token(&emu).await;
    let r = reqwest::Client::new()
        .delete(format!(
            "{}/v2/{}/contexts",
            emu.base_url(),
            emu.session_of(PSID)
        ))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, _) = graph
        .post(
            "messages",
            json!({ "recipient": { "id": PSID }, "messaging_type": "RESPONSE", "message": { "text": "Welcome back!" } }),
        )
        .await;
    assert_eq!(s, 200);
    emu.flush().await;
    emu.user_says(PSID, "hello again").await;

    for e in emu.log() {
        println!("{e}");
    }
    assert!(emu.errors().is_empty(), "{:?}", emu.errors());
    assert_eq!(emu.owner(PSID).as_deref(), Some(cfg.bot_app_id.as_str()));
    let texts: Vec<(String, String)> = emu
        .messages_to_user(PSID)
        .into_iter()
        .map(|m| (emu.app_name(&m.from_app_id), m.text))
        .collect();
    assert_eq!(
        texts,
        vec![
            (
                "bot app".into(),
                "Hi! I'm the demo bot. Ask me about an order, or ask for a human.".into()
            ),
            ("bot app".into(), "Order A-1042 is on its way.".into()),
            ("bot app".into(), "Connecting you with a person…".into()),
            ("page inbox".into(), "Hi, Sam here. Let me check.".into()),
            ("bot app".into(), "Welcome back!".into()),
            (
                "bot app".into(),
                "Hi! I'm the demo bot. Ask me about an order, or ask for a human.".into()
            ),
        ]
    );
    emu.stop().await;
}
