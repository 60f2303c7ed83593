// Package envoyconfig validates Envoy bootstrap configurations: the YAML
// decodes into Envoy's Bootstrap proto (unknown fields and unknown
// typed_config types fail), passes ValidateAll — and so does every
// typed_config inside it —, sets no deprecated field and no
// failure_mode_allow, every cluster a route or a filter names exists, and
// every HttpConnectionManager normalises paths (see PathNormalization).
package envoyconfig

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/pkg/authz"
)

type validator interface{ ValidateAll() error }

// Report is what Validate found.
type Report struct {
	Clusters        []string
	ExtAuthzFilters int
	Validated       int // typed messages whose ValidateAll ran
	// Backchannel is how the back-channel logout path reaches extauthz:
	// "with_request_body" (checked with its body) or "direct" (routed to
	// an extauthz cluster, unchecked); "" when there is no such route.
	Backchannel string
}

// BackchannelPath is the default back-channel logout path, which every
// configuration with an ext_authz filter must route (see Validate).
const BackchannelPath = "/logout/backchannel"

// Validate checks one Envoy bootstrap YAML document.
func Validate(doc []byte) (*Report, error) {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(j, &b); err != nil {
		return nil, fmt.Errorf("does not decode into envoy.config.bootstrap.v3.Bootstrap: %w", err)
	}
	rep := &Report{}
	for _, c := range b.GetStaticResources().GetClusters() {
		rep.Clusters = append(rep.Clusters, c.GetName())
	}
	var named []string // clusters that routes and filters refer to
	listener := ""     // the listener being walked
	err = walk(b.ProtoReflect(), "bootstrap", func(m protoreflect.Message, path string) error {
		var err error
		m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDeprecated() {
				err = fmt.Errorf("%s.%s is deprecated", path, fd.Name())
			}
			return err == nil
		})
		if err != nil {
			return err
		}
		if v, ok := m.Interface().(validator); ok && m.Interface() != proto.Message(&b) {
			rep.Validated++
			if err := v.ValidateAll(); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
		switch x := m.Interface().(type) {
		case *listenerv3.Listener:
			listener = x.GetName()
		case *hcmv3.HttpConnectionManager:
			if err := errors.Join(PathNormalization(x), UnderscoreHeaders(x)); err != nil {
				return fmt.Errorf("listener %q, HttpConnectionManager %q: %w", listener, x.GetStatPrefix(), err)
			}
		case *routev3.RouteAction:
			named = append(named, x.GetCluster())
		case *routev3.Route:
			if x.GetMatch().GetPath() == BackchannelPath {
				rep.Backchannel = backchannelRoute(x)
			}
		case *extauthzv3.BufferSettings:
			if x.GetMaxRequestBytes() > authz.MaxBodyBytes {
				return fmt.Errorf("%s: max_request_bytes %d: extauthz refuses a CheckRequest with a body over %d bytes (RESOURCE_EXHAUSTED, and Envoy's status_on_error)", path, x.GetMaxRequestBytes(), authz.MaxBodyBytes)
			}
		case *extauthzv3.ExtAuthz:
			rep.ExtAuthzFilters++
			if x.GetFailureModeAllow() {
				return fmt.Errorf("%s: failure_mode_allow lets requests through when extauthz is down", path)
			}
			if missing := missingHeaders(x); len(missing) > 0 {
				return fmt.Errorf("%s: allowed_headers lacks %v, which extauthz reads", path, missing)
			}
			if c := x.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != "" {
				named = append(named, c)
			}
			if c := x.GetHttpService().GetServerUri().GetCluster(); c != "" {
				named = append(named, c)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("Bootstrap.ValidateAll: %w", err)
	}
	if rep.ExtAuthzFilters > 0 && rep.Backchannel == "" {
		return nil, fmt.Errorf("no route for the back-channel logout (%s) that gives extauthz the request body: ext_authz check_settings.with_request_body on it (gRPC), or a route straight to the extauthz cluster with ext_authz disabled (HTTP)", BackchannelPath)
	}
	var errs []error
	for _, c := range named {
		if !slices.Contains(rep.Clusters, c) {
			errs = append(errs, fmt.Errorf("cluster %q is used but not defined (defined: %v)", c, rep.Clusters))
		}
	}
	return rep, errors.Join(errs...)
}

// missingHeaders are the request headers extauthz reads that an ext_authz
// filter does not send it. Pseudo-headers always go; x-forwarded-host and
// x-forwarded-for are read only when the operator trusts a proxy that sets
// them (EXTAUTHZ_TRUST_FORWARDED_HOST, EXTAUTHZ_XFF_TRUSTED_HOPS).
func missingHeaders(x *extauthzv3.ExtAuthz) []string {
	var missing []string
	for _, h := range authz.RequestHeaders {
		if strings.HasPrefix(h, ":") || h == "x-forwarded-host" || h == "x-forwarded-for" {
			continue
		}
		if !slices.ContainsFunc(x.GetAllowedHeaders().GetPatterns(), func(m *matcherv3.StringMatcher) bool {
			return m.GetExact() == h || m.GetPrefix() != "" && strings.HasPrefix(h, m.GetPrefix())
		}) {
			missing = append(missing, h)
		}
	}
	return missing
}

// backchannelRoute says how a route of the back-channel logout path
// reaches extauthz with the body ("" when it does not).
func backchannelRoute(r *routev3.Route) string {
	a, ok := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]
	if !ok {
		return ""
	}
	var pr extauthzv3.ExtAuthzPerRoute
	if err := a.UnmarshalTo(&pr); err != nil {
		return ""
	}
	switch {
	case pr.GetCheckSettings().GetWithRequestBody() != nil && !pr.GetCheckSettings().GetDisableRequestBodyBuffering():
		return "with_request_body"
	case pr.GetDisabled() && strings.Contains(r.GetRoute().GetCluster(), "extauthz"):
		return "direct"
	}
	return ""
}

// PathNormalization checks that an HttpConnectionManager gives ext_authz,
// its routes and the upstream one spelling of every path: normalize_path
// (RFC 3986 dot segments; CVE-2019-9901: /info/../private passed ext_authz
// while the upstream served /private), merge_slashes, and
// path_with_escaped_slashes_action rejecting %2F and %5C or unescaping them
// with a redirect (CVE-2021-29492). UNESCAPE_AND_FORWARD, KEEP_UNCHANGED and
// the default are refused: Envoy's own documentation warns against them where
// something decides on the path.
func PathNormalization(h *hcmv3.HttpConnectionManager) error {
	var missing []string
	if !h.GetNormalizePath().GetValue() {
		missing = append(missing, "normalize_path: true")
	}
	if !h.GetMergeSlashes() {
		missing = append(missing, "merge_slashes: true")
	}
	switch h.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_REJECT_REQUEST, hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
	default:
		missing = append(missing, "path_with_escaped_slashes_action: REJECT_REQUEST (or UNESCAPE_AND_REDIRECT), not "+h.GetPathWithEscapedSlashesAction().String())
	}
	if len(missing) > 0 {
		return fmt.Errorf("paths are not normalised, so extauthz may decide on another path than the upstream serves; set %s", strings.Join(missing, ", "))
	}
	return nil
}

// UnderscoreHeaders checks that an HttpConnectionManager keeps headers whose
// names hold "_" from the upstream: X_HTTP_METHOD_OVERRIDE is
// X-HTTP-Method-Override to CGI-style servers (Rack, PHP), but
// allowed_headers does not send it to extauthz.
func UnderscoreHeaders(h *hcmv3.HttpConnectionManager) error {
	switch a := h.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); a {
	case corev3.HttpProtocolOptions_DROP_HEADER, corev3.HttpProtocolOptions_REJECT_REQUEST:
	default:
		return fmt.Errorf("headers with underscores reach the upstream unseen by extauthz (X_HTTP_METHOD_OVERRIDE is X-HTTP-Method-Override to Rack and PHP); set common_http_protocol_options.headers_with_underscores_action: DROP_HEADER (or REJECT_REQUEST), not %s", a)
	}
	return nil
}

// walk visits m and every message inside it, unpacking google.protobuf.Any.
func walk(m protoreflect.Message, path string, visit func(protoreflect.Message, string) error) error {
	if any, ok := m.Interface().(*anypb.Any); ok {
		inner, err := any.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: typed_config %s: %w", path, any.GetTypeUrl(), err)
		}
		return walk(inner.ProtoReflect(), path+"("+string(inner.ProtoReflect().Descriptor().FullName())+")", visit)
	}
	if err := visit(m, path); err != nil {
		return err
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					err = walk(mv.Message(), p+"["+k.String()+"]", visit)
					return err == nil
				})
			}
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				for i := range v.List().Len() {
					if err = walk(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), visit); err != nil {
						break
					}
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			err = walk(v.Message(), p, visit)
		}
		return err == nil
	})
	return err
}
