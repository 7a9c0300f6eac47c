"""Alternative data: adapters for each provider (``sources``), the bounded HTTP client they share
(``http``), offline headline sentiment (``sentiment``), the collection run that stores or
quarantines every record (``collect``) and the build of the v2 features (``build``)."""
