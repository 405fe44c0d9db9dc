//! The emulator's HTTP server: one catch-all handler that routes by path, so Graph paths
//! (`/{version}/{node}/{edge}`) and Dialogflow resource names of any depth
//! (`/v2/projects/…/contexts/…`) are matched by hand.

use std::sync::Weak;

use actix_web::dev::Server;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use super::{Inner, google, graph};

pub(crate) const METADATA_TOKEN_PATH: &str =
    "/computeMetadata/v1/instance/service-accounts/default/token";

pub(crate) fn build(
    listener: std::net::TcpListener,
    inner: Weak<Inner>,
) -> std::io::Result<Server> {
    let data = web::Data::new(inner);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .default_service(web::to(dispatch))
    })
    .listen(listener)?
    .workers(2)
    .disable_signals()
    .shutdown_timeout(1)
    .run())
}

async fn dispatch(
    req: HttpRequest,
    body: web::Bytes,
    data: web::Data<Weak<Inner>>,
) -> HttpResponse {
    let Some(inner) = data.upgrade() else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    let path = req.path().to_string();
    if path == "/token" {
        return google::token(&inner, &req, &body);
    }
    if path == METADATA_TOKEN_PATH {
        return google::metadata_token(&inner, &req);
    }
    if let Some(rest) = path.strip_prefix("/v2/")
        && rest.starts_with("projects/")
    {
        return google::dialogflow(&inner, &req, &body, rest).await;
    }
    if path == "/" || path.is_empty() {
        return HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body("messenger-handover emulator: Graph API, Dialogflow API, OAuth\n");
    }
    graph::handle(&inner, &req, &body, &path).await
}
