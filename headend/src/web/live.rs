//! The live stream: one WebSocket per open app. The phone's first message is `{"auth": TOKEN}`; then
//! the server pushes the customer's notices as they happen (`{"type": "low_credit", ...}`), answers
//! `{"ping": n}` with `{"type": "pong", "n": n}`, and says `{"type": "expired"}` when the session ends.

use std::sync::mpsc::TryRecvError;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use concentrator_mpc::backend::Backend;
use serde_json::json;

use super::auth::App;
use super::wire::{self, LiveIn};

/// How often notices are looked for (the most a notice waits here).
const POLL: Duration = Duration::from_millis(25);
/// Time for the phone's first message.
const AUTH_WAIT: Duration = Duration::from_secs(10);

pub async fn upgrade(State(app): State<Arc<App>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(wire::MAX_BODY)
        .on_upgrade(move |socket| live(app, socket))
}

async fn say(ws: &mut WebSocket, v: serde_json::Value) -> bool {
    ws.send(Message::Text(v.to_string().into())).await.is_ok()
}

/// A message from the phone, decoded; `None` for a close or a failed socket.
fn read(m: Message) -> Option<Result<LiveIn, wire::BadRequest>> {
    match m {
        Message::Text(t) => Some(wire::decode("live", t.as_bytes())),
        Message::Binary(b) => Some(wire::decode("live", &b)),
        Message::Ping(_) | Message::Pong(_) => Some(Ok(LiveIn::Ping(0))),
        Message::Close(_) => None,
    }
}

async fn live(app: Arc<App>, mut ws: WebSocket) {
    let first = tokio::time::timeout(AUTH_WAIT, ws.recv()).await;
    let token = match first {
        Ok(Some(Ok(m))) => match read(m) {
            Some(Ok(LiveIn::Auth(t))) => t,
            Some(Err(e)) => {
                say(&mut ws, json!({"type": "error", "message": e.0})).await;
                return;
            }
            _ => return,
        },
        _ => return,
    };
    let Some(session) = app.session_of(&token) else {
        say(
            &mut ws,
            json!({"type": "expired", "message": "not logged in, or the session expired; log in again"}),
        )
        .await;
        return;
    };
    let notices = app.backend.subscribe(&session.customer);
    // The app reads every kind: the steps of a purchase and "missed" too.
    notices.set_progress(true);
    if !say(
        &mut ws,
        json!({"type": "hello", "customer": session.customer}),
    )
    .await
    {
        return;
    }
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            m = ws.recv() => {
                let Some(Ok(m)) = m else { return };
                match read(m) {
                    None => return,
                    Some(Ok(LiveIn::Ping(n))) => {
                        if !say(&mut ws, json!({"type": "pong", "n": n})).await { return; }
                    }
                    Some(Ok(LiveIn::Auth(_))) => {}
                    Some(Err(e)) => {
                        say(&mut ws, json!({"type": "error", "message": e.0})).await;
                        return;
                    }
                }
            }
            _ = tick.tick() => {
                if app.session_of(&token).is_none() {
                    say(&mut ws, json!({"type": "expired", "message": "the session expired; log in again"})).await;
                    return;
                }
                loop {
                    match notices.try_recv() {
                        Ok(n) => {
                            if !say(&mut ws, wire::notice_json(&n)).await { return; }
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return,
                    }
                }
            }
        }
    }
}
