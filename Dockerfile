# stereo's command-line programs (the examples) in one image, for the cluster recipes of deploy/:
# cache_activations (workers and finalize), train_crosscoder, and the analysis programs.
#
#   docker build -t stereo .                                          # CPU (burn-flex)
#   docker build -t stereo:cuda --build-arg FEATURES=cuda \
#       --build-arg RUNTIME_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 .   # CUDA backend
#
# The entrypoint is cache_activations; the Kubernetes Jobs and Slurm scripts name the program they run.

ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM rust:1.92-bookworm AS build
WORKDIR /src
ARG FEATURES=""
COPY . .
RUN cargo build --release --locked ${FEATURES:+--features "$FEATURES"} \
        --example cache_activations --example train_crosscoder --example day1 \
        --example encode --example steer --example latent_scaling \
    && mkdir -p /out \
    && for program in cache_activations train_crosscoder day1 encode steer latent_scaling; do \
        cp "target/release/examples/$program" /out/; \
    done

FROM ${RUNTIME_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# The embedded demo pair, so that `day1` runs with no weights around.
COPY fixtures/demo /opt/stereo/fixtures/demo
WORKDIR /opt/stereo
RUN useradd --create-home --uid 10001 stereo
USER 10001
ENV HF_HOME=/home/stereo/.cache/huggingface
ENTRYPOINT ["cache_activations"]
CMD ["--help"]
