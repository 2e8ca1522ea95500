"""The ground floor of mlqueue: settings, schemas, task contract, model interface, job store."""
