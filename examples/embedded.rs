//! An embedding program: registers its own Rust backends by name and serves a YAML app
//! that refers to them with `rust: NAME`.
//!
//! ```text
//! cargo run --example embedded -- examples/embedded.yaml --port 8000
//! curl localhost:8000/counter                                          # {"current":0}
//! curl -X POST -H 'X-SERVE-CALL-METHOD: other_method' -d 5 localhost:8000/counter   # true
//! ```

mod support;

use std::sync::atomic::{AtomicI64, Ordering};

use ferroserve::{
    AppConfig, Backend, BackendError, BackendFactory, Methods, Registry, Request, Response, Serve,
};
use serde_json::json;

/// The FAQ's `StatefulProcessor`: a count per replica.
struct StatefulProcessor {
    count: AtomicI64,
}

impl Backend for StatefulProcessor {
    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        match req.method_name() {
            "other_method" => {
                let inc: i64 = req.json()?;
                self.count.fetch_add(inc, Ordering::SeqCst);
                Response::json(&true)
            }
            _ => Response::json(&json!({"current": self.count.load(Ordering::SeqCst)})),
        }
    }

    fn methods(&self) -> Methods {
        Methods::only(["__call__", "other_method"])
    }
}

/// The backends this program offers to its YAML.
fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(
            "counter",
            BackendFactory::new(|_ctx| {
                Ok(StatefulProcessor {
                    count: AtomicI64::new(0),
                })
            }),
        )
        .register(
            "greeter",
            BackendFactory::function(|req: Request| async move {
                let name = req
                    .query_param("name")
                    .unwrap_or_else(|| "world".to_owned());
                Ok(Response::text(format!("Hello, {name}!\n")))
            }),
        );
    registry
}

/// The command line: the app file, and the port as the `ferroserve` binary takes it.
#[derive(clap::Parser, Debug)]
struct Args {
    /// The YAML app file.
    #[arg(default_value = "examples/embedded.yaml")]
    config: std::path::PathBuf,
    /// Port to listen on (overrides `http.port`; 0 picks a free port).
    #[arg(long, env = "FERROSERVE_PORT")]
    port: Option<u16>,
}

#[tokio::main]
async fn main() -> Result<(), support::Failure> {
    let args = <Args as clap::Parser>::parse();
    let registry = registry();
    let mut app = AppConfig::load(&args.config, &registry)?;
    if let Some(port) = args.port {
        app.http.port = port;
    }
    let serve = Serve::start(app.http.clone()).await?;
    serve.deploy(&app, &registry).await?;
    if let Some(addr) = serve.local_addr() {
        println!("ferroserve listening on http://{addr}");
    }
    ferroserve::shutdown_signal().await;
    serve.shutdown().await;
    Ok(())
}
