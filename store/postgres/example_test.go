package postgres_test

import (
	"context"
	"log"

	"agentflow/store/postgres"
	"agentflow/workflow"
)

// Opening the PostgreSQL store that several processes share: the schema is
// migrated on open. Each engine on it names the service whose workflow
// classes it runs. (This example is compiled but not run: it needs a
// server.)
func ExampleOpen() {
	ctx := context.Background()
	st, err := postgres.Open(ctx, "postgres://app@db.internal:5432/app?sslmode=require", postgres.Options{
		Schema:   "agentflow", // created if missing; lets several stores share one database
		MaxConns: 16,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	eng, err := workflow.NewEngine(workflow.Options{Store: st, Service: "email-workflows"})
	if err != nil {
		log.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer eng.Stop(ctx)
}
