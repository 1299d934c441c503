//! etcd's user authentication: the client trades a user name and password
//! for a token (`Auth/Authenticate`) and sends it as the `token` metadata
//! of every call and watch. etcd forgets tokens (simple tokens after
//! `--auth-token-ttl` of disuse, 5 minutes by default; JWT tokens when
//! they expire); a call refused for its token trades the password again
//! and is sent once more.

use std::fmt;

use http::HeaderValue;
use http_body_util::Full;
use prost::Message;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{
    encode_frame, grpc_request, pb, read_unary, unreachable, with_causes, EtcdClient, EtcdError,
    AUTHENTICATE,
};

/// A user name and password for etcd.
#[derive(Clone)]
pub struct Credentials {
    /// The etcd user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The token the client holds, if any; one authentication at a time.
#[derive(Default)]
pub struct Token(pub Mutex<Option<HeaderValue>>);

/// The gRPC metadata etcd reads the token from.
pub const TOKEN_HEADER: &str = "token";

/// Whether an error status means etcd no longer accepts the token sent.
pub fn token_refused(code: u32, message: &str) -> bool {
    code == 16 && message.contains("token")
}

impl EtcdClient {
    /// The token to send: none without credentials; the one held, or a
    /// new one from `Auth/Authenticate`.
    pub(super) async fn token(&self, deadline: Instant) -> Result<Option<HeaderValue>, EtcdError> {
        let Some(credentials) = &self.inner.credentials else {
            return Ok(None);
        };
        let mut held = self.inner.token.0.lock().await;
        if let Some(token) = &*held {
            return Ok(Some(token.clone()));
        }
        let request = pb::AuthenticateRequest {
            name: credentials.user.clone(),
            password: credentials.password.clone(),
        };
        let (mut sender, endpoint, generation) = self.cached(deadline).await?;
        let url = &self.inner.endpoints[endpoint].url;
        let request = grpc_request(url, AUTHENTICATE, Full::new(encode_frame(&request)), None)?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                self.forget(generation).await;
                return Err(unreachable(
                    url,
                    format!("authenticating failed: {}", with_causes(&e)),
                ));
            }
        };
        let answer =
            pb::AuthenticateResponse::decode(read_unary(response, url).await?).map_err(|e| {
                EtcdError::Protocol(format!("cannot decode the Authenticate answer: {e}"))
            })?;
        let token = HeaderValue::from_str(&answer.token).map_err(|_| {
            EtcdError::Protocol("etcd answered a token that is not a header value".into())
        })?;
        *held = Some(token.clone());
        Ok(Some(token))
    }

    /// Drops `used` if it is still the token held (etcd refused it).
    pub(super) async fn forget_token(&self, used: Option<&HeaderValue>) {
        let mut held = self.inner.token.0.lock().await;
        if held.as_ref() == used {
            *held = None;
        }
    }
}
