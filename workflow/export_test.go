package workflow

// ProcessIdentity is processIdentity, for the tests of package workflow_test.
var ProcessIdentity = processIdentity
