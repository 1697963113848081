//! The login side of the emulated platform: keycloak's token endpoint (password and refresh
//! grants), the legacy `/v1/vms/auth` login and refresh, and the bearer-token check in front of
//! the video API. Both login styles draw on the same account in [`PlatformState`]; they differ
//! in how they are asked and answered (a form and OAuth errors for keycloak, JSON for the legacy
//! login), so each keeps its own wording here.
//!
//! [`PlatformState`]: crate::emulator::state::PlatformState

use hyper::StatusCode;
use hyper::header::{self, HeaderMap};
use serde_json::json;

use super::{
    Answer, Refused, Shared, bad_video_manager, bump, has_media_type, json_answer, message,
    parse_decimal, parse_json, whole_seconds, with_header,
};
use crate::emulator::state::{DEFAULT_VIDEO_MANAGER_ID, LoginRefusal, LoginStyle};

pub(super) fn keycloak_token(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Answer {
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        json_answer(
            status,
            &json!({"error": error, "error_description": description}),
        )
    };
    if !has_media_type(headers, "application/x-www-form-urlencoded") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    };
    if field("client_id").is_none() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing parameter: client_id",
        );
    }
    let now = shared.clock.now();
    let result = match field("grant_type") {
        Some("password") => {
            let (Some(username), Some(password)) = (field("username"), field("password")) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Missing parameter: username or password",
                );
            };
            let result =
                shared
                    .state()
                    .password_login(LoginStyle::Keycloak, username, password, now);
            count_login(shared, result.is_ok());
            result
        }
        Some("refresh_token") => {
            let Some(refresh_token) = field("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Missing parameter: refresh_token",
                );
            };
            let result = shared
                .state()
                .refresh(LoginStyle::Keycloak, refresh_token, now);
            if result.is_ok() {
                bump(&shared.counters.refreshes);
            }
            result
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant_type",
            );
        }
    };
    match result {
        Ok(tokens) => {
            let (access_ttl, refresh_ttl) = {
                let state = shared.state();
                (state.access_ttl(), state.refresh_ttl())
            };
            json_answer(
                StatusCode::OK,
                &json!({
                    "access_token": tokens.access_token,
                    "expires_in": whole_seconds(access_ttl),
                    "refresh_expires_in": whole_seconds(refresh_ttl),
                    "refresh_token": tokens.refresh_token,
                    "token_type": "Bearer",
                    "not-before-policy": 0,
                    "scope": "openid profile email",
                }),
            )
        }
        Err(LoginRefusal::BadCredentials) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "Invalid user credentials",
        ),
        Err(LoginRefusal::BadRefreshToken) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid refresh token",
        ),
    }
}

fn count_login(shared: &Shared, accepted: bool) {
    if accepted {
        bump(&shared.counters.logins);
    } else {
        bump(&shared.counters.logins_refused);
    }
}

#[derive(serde::Deserialize)]
struct LegacyLoginBody {
    username: String,
    password: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyRefreshBody {
    refresh_token: String,
}

pub(super) fn legacy_login(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Answer {
    let login: LegacyLoginBody = match parse_json(headers, body) {
        Ok(login) => login,
        Err(answer) => return *answer,
    };
    let now = shared.clock.now();
    let result =
        shared
            .state()
            .password_login(LoginStyle::Legacy, &login.username, &login.password, now);
    count_login(shared, result.is_ok());
    match result {
        Ok(tokens) => {
            let vm = if shared.legacy_vm_id_as_string {
                json!(DEFAULT_VIDEO_MANAGER_ID.to_string())
            } else {
                json!(DEFAULT_VIDEO_MANAGER_ID)
            };
            json_answer(
                StatusCode::OK,
                &json!({
                    "accessToken": tokens.access_token,
                    "refreshToken": tokens.refresh_token,
                    "videoManagerList": [
                        {"id": DEFAULT_VIDEO_MANAGER_ID, "name": "Emulated VideoManager"}
                    ],
                    "validForVideoManager": vm,
                }),
            )
        }
        Err(_) => message(StatusCode::UNAUTHORIZED, "Invalid username or password"),
    }
}

pub(super) fn legacy_refresh(
    shared: &Shared,
    headers: &HeaderMap,
    vm: &str,
    body: &[u8],
) -> Answer {
    if parse_decimal::<u64>(vm).is_none() {
        return bad_video_manager(vm);
    }
    let refresh: LegacyRefreshBody = match parse_json(headers, body) {
        Ok(refresh) => refresh,
        Err(answer) => return *answer,
    };
    let now = shared.clock.now();
    let result = shared
        .state()
        .refresh(LoginStyle::Legacy, &refresh.refresh_token, now);
    match result {
        Ok(tokens) => {
            bump(&shared.counters.refreshes);
            json_answer(StatusCode::OK, &json!({"accessToken": tokens.access_token}))
        }
        Err(_) => message(
            StatusCode::UNAUTHORIZED,
            "refresh token is not valid or has expired",
        ),
    }
}

/// `Err` is the answer when the bearer token is missing, unknown or expired.
pub(super) fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Refused> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let authorized =
        token.is_some_and(|token| shared.state().is_authorized(token, shared.clock.now()));
    if authorized {
        Ok(())
    } else {
        let answer = message(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: a valid, unexpired bearer access token is required",
        );
        Err(Box::new(with_header(
            answer,
            header::WWW_AUTHENTICATE,
            "Bearer",
        )))
    }
}
