package authz_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/pkg/authz"
)

// TestReasons lists every reason a decision can have: the values of the
// checks metric's reason label (pkg/metrics shows no other). Adding one
// is a change of the metrics' contract: add it here, and to the README.
func TestReasons(t *testing.T) {
	want := []string{
		"session", "public_route",
		"unknown_host", "bad_path", "bad_method", "no_route", "headers_too_large",
		"no_session", "invalid_session", "token_expired", "refresh_rejected", "login_redirect",
		"other_tenant", "missing_scope", "csrf",
		"store_unavailable", "idp_unavailable", "refresh_wait", "idp_busy", "canceled",
		"login_complete", "callback_unconfigured", "callback_invalid", "callback_unknown_state", "callback_idp_error", "callback_rejected",
		"logout", "logout_cross_site", "logout_method",
		"backchannel_logout", "backchannel_invalid",
	}
	var got []string
	for _, r := range authz.Reasons() {
		got = append(got, string(r))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("authz.Reasons() = %q\nwant %q", got, want)
	}
}

// TestReasonsAreConstants reads the source of every package: each reason
// is one of the constants of reason.go, all of which Reasons lists, and
// no decision is given a reason any other way (a string literal where a
// Reason goes, or a conversion to Reason).
func TestReasonsAreConstants(t *testing.T) {
	type file struct {
		path string
		ast  *ast.File
	}
	var files []file
	fset := token.NewFileSet()
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != "../.." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin" || name == "tools") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, ".pb.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files = append(files, file{path, f})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	isReason := func(e ast.Expr) bool {
		switch e := e.(type) {
		case *ast.Ident:
			return e.Name == "Reason"
		case *ast.SelectorExpr:
			x, ok := e.X.(*ast.Ident)
			return ok && x.Name == "authz" && e.Sel.Name == "Reason"
		}
		return false
	}

	// The constants of type Reason, and the functions taking a Reason
	// (by name: the argument positions that are reasons).
	consts := map[string]string{} // name -> value
	takesReason := map[string][]int{}
	for _, f := range files {
		for _, decl := range f.ast.Decls {
			switch decl := decl.(type) {
			case *ast.GenDecl:
				if decl.Tok != token.CONST {
					continue
				}
				for _, spec := range decl.Specs {
					vs := spec.(*ast.ValueSpec)
					if vs.Type != nil && isReason(vs.Type) {
						for i, n := range vs.Names {
							v := ""
							if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
								v, _ = strconv.Unquote(lit.Value)
							}
							consts[n.Name] = v
						}
					}
				}
			case *ast.FuncDecl:
				i := 0
				for _, field := range decl.Type.Params.List {
					n := max(len(field.Names), 1)
					if isReason(field.Type) {
						for j := range n {
							takesReason[decl.Name.Name] = append(takesReason[decl.Name.Name], i+j)
						}
					}
					i += n
				}
			}
		}
	}
	listed := map[string]bool{}
	for _, r := range authz.Reasons() {
		listed[string(r)] = true
	}
	for name, v := range consts {
		if !strings.HasPrefix(name, "Reason") {
			t.Errorf("constant %s of type Reason: name it Reason…", name)
		}
		if !listed[v] {
			t.Errorf("constant %s = %q is not in Reasons", name, v)
		}
	}
	if len(consts) != len(listed) || len(listed) != len(authz.Reasons()) {
		t.Errorf("%d constants of type Reason, %d distinct values listed by Reasons, %d in all", len(consts), len(listed), len(authz.Reasons()))
	}
	if len(takesReason) == 0 {
		t.Fatal("no function takes a Reason: the scan is broken")
	}

	// Reasons given any other way.
	for _, f := range files {
		ast.Inspect(f.ast, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.KeyValueExpr:
				if k, ok := n.Key.(*ast.Ident); ok && k.Name == "Reason" {
					if _, lit := n.Value.(*ast.BasicLit); lit {
						t.Errorf("%s: Reason: %s: use a Reason constant", fset.Position(n.Pos()), n.Value.(*ast.BasicLit).Value)
					}
				}
			case *ast.CallExpr:
				if isReason(n.Fun) {
					t.Errorf("%s: a conversion to Reason: use a Reason constant", fset.Position(n.Pos()))
				}
				name := ""
				switch fun := n.Fun.(type) {
				case *ast.Ident:
					name = fun.Name
				case *ast.SelectorExpr:
					name = fun.Sel.Name
				}
				for _, i := range takesReason[name] {
					if i < len(n.Args) {
						if lit, ok := n.Args[i].(*ast.BasicLit); ok {
							t.Errorf("%s: %s(…, %s, …): use a Reason constant", fset.Position(n.Pos()), name, lit.Value)
						}
					}
				}
			}
			return true
		})
	}
}
