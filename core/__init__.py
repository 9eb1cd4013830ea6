"""What the API and the workers share: settings, the database and its tables, the storage, the job
queue, the job lifecycle and the rules that turn a job request into the job a worker runs."""
