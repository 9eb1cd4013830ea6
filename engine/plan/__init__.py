"""What a job is, whether it may run and what it will cost, without torch: the specs of a request, the
errors, the rules, the sizes, the derived student designs, the search space and the file checks. The API
imports these at submission; the import contract keeps torch out of this package."""
