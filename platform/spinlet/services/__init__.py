"""Services: the operations of Spinlet, between the HTTP layer and the store/backends."""
