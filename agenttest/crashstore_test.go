package agenttest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"testing"

	"agentflow/store"
)

// TestCrashStoreCoversStore checks that crashStore overrides every method
// of store.Store, so that no call of a crashed engine or runtime reaches
// the store through the embedded interface. A method added to store.Store
// needs its override in crashstore.go.
func TestCrashStoreCoversStore(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "crashstore.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Recv == nil || len(fd.Recv.List) != 1 {
			continue
		}
		if star, ok := fd.Recv.List[0].Type.(*ast.StarExpr); ok {
			if id, ok := star.X.(*ast.Ident); ok && id.Name == "crashStore" {
				declared[fd.Name.Name] = true
			}
		}
	}
	st := reflect.TypeFor[store.Store]()
	for i := range st.NumMethod() {
		if name := st.Method(i).Name; !declared[name] {
			t.Errorf("crashStore does not override store.Store's %s", name)
		}
	}
}
