# The cmcd-sentinel image: the daemon (`run`) and the MCP server (`mcp`) in one binary.
# Ubuntu 24.04 ("noble") ships librdkafka 2.3, which talks to current Apache Kafka, MSK and
# Confluent brokers (Debian 12's 2.0.2 is only used on the development machines).
FROM swift:6.2-noble AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends librdkafka-dev libsqlite3-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The manifest names every target, tests included, so all their folders must be there.
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift package resolve
RUN swift build -c release --product cmcd-sentinel --static-swift-stdlib \
    && cp "$(swift build -c release --show-bin-path)/cmcd-sentinel" /usr/local/bin/cmcd-sentinel

FROM ubuntu:24.04
RUN apt-get update \
    && apt-get install -y --no-install-recommends librdkafka1 libsqlite3-0 zlib1g ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/cmcd-sentinel --create-home sentinel
COPY --from=build /usr/local/bin/cmcd-sentinel /usr/local/bin/cmcd-sentinel
COPY rules /etc/cmcd-sentinel/rules
COPY deploy/sentinel.yaml /etc/cmcd-sentinel/sentinel.yaml
USER sentinel
WORKDIR /var/lib/cmcd-sentinel
EXPOSE 9464 8765
ENTRYPOINT ["cmcd-sentinel"]
CMD ["run", "--config", "/etc/cmcd-sentinel/sentinel.yaml"]
