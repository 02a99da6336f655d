package admin_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"agentflow/admin"
	"agentflow/store"
	"agentflow/store/sqlite"
)

// A program mounts the operator API next to its agents; here it is served
// on its own over a store with one queued instance, and paused through
// the Client.
func ExampleNewHandler() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "admin-example")
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlite.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	st.CreateInstances(ctx, []*store.Instance{{ID: "order-42", Workflow: "fulfil", Params: []byte(`{"sku":"A1"}`),
		Status: store.StatusQueued, CreatedAt: now, UpdatedAt: now, WakeAt: now.Add(time.Hour)}})

	srv := httptest.NewServer(admin.NewHandler(admin.Options{Store: st, Token: "s3cret"}))
	defer srv.Close()

	c := &admin.Client{BaseURL: srv.URL, Token: "s3cret"}
	w, err := c.Pause(ctx, "order-42")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(w.ID, w.Status)
	_, err = c.Pause(ctx, "order-43")
	fmt.Println(err)
	// Output:
	// order-42 paused
	// not_found (404 Not Found): workflow instance "order-43" not found
}
