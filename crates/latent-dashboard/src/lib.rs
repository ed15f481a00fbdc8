//! # latent-dashboard
//!
//! What does a crosscoder latent fire on? A researcher never trusts a latent before seeing it. For any
//! latents, over an activation store, a stereo run or precomputed values ([`LatentValues`]):
//! - the top-activating contexts (a window of tokens around the peak, shaded by activation; at most one
//!   per document) and samples from each of several activation intervals, so the ordinary-strength
//!   behaviour shows, not only the peak (as SAEDashboard shows them);
//! - the activation histogram and the firing density;
//! - the share of its activation mass on user, assistant, chat-template and `<bos>` tokens (the token
//!   roles recorded by the stores and the runs);
//! - with [`attach_lens`], the tokens each model's decoder vector promotes and suppresses through that
//!   model's final norm and unembedding (base vs chat).
//!
//! [`build_dashboards`] makes one [`LatentDashboard`] per latent (serialisable: `dashboards.json`);
//! [`dashboards_page`] renders them as one self-contained HTML page and [`dashboard_section`] as a
//! section of another report.
//!
//! ```no_run
//! use std::sync::Arc;
//! use activation_cache::ActivationStore;
//! use latent_dashboard::{build_dashboards, dashboards_page, DashboardOptions, StoreLatents};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = ActivationStore::open("store/")?;
//! let crosscoder: Arc<dyn crosscoder::Crosscoder> = Arc::from(crosscoder::load("crosscoder/")?);
//! let tokenizer = gemma_model::GemmaTokenizer::from_file("chat/tokenizer.json")?;
//! let source = StoreLatents::new(&store, crosscoder)?;
//! let dashboards = build_dashboards(&source, &[240], &tokenizer, &DashboardOptions::default(), true)?;
//! std::fs::write("latent_240.html", dashboards_page("Latent #240", &dashboards))?;
//! # Ok(()) }
//! ```

mod collect;
mod dashboard;
mod error;
mod html;
mod lens;
mod source;

pub use dashboard::{
    build_dashboards, Context, ContextToken, DashboardOptions, Histogram, IntervalSamples,
    LatentDashboard, RoleShare,
};
pub use error::{DashboardError, Result};
pub use html::{dashboard_section, dashboards_page, DASHBOARD_CSS};
pub use lens::{attach_lens, LensToken, LensTokens, NEGLIGIBLE};
pub use source::{LatentValues, PairedLatents, PrecomputedValues, StoreLatents};
