# extauthz: a static binary on distroless, as a non-root user.
#   docker build -t extauthz .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/extauthz ./cmd/extauthz

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/extauthz /extauthz
USER 65532:65532
EXPOSE 9001 9002 9003
ENTRYPOINT ["/extauthz"]
