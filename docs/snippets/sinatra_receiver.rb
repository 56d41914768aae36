# A Sinatra receiver that verifies the exact bytes hookd sent.
require "json"
require "openssl"
require "set"
require "sinatra/base"

class AbstraktWebhooks < Sinatra::Base
  WEBHOOK_SECRET = ENV.fetch("WEBHOOK_SECRET")
  # X-Abstrakt-Delivery values already processed. In production: a table with a unique index.
  PROCESSED = Set.new
  LOCK = Mutex.new

  post "/webhook/abstrakt" do
    content_type :json
    request.body.rewind # a middleware may have read the stream already
    body = request.body.read
    expected = OpenSSL::HMAC.hexdigest("SHA256", WEBHOOK_SECRET, body)
    # Rack's secure_compare compares in constant time (false on different lengths).
    unless Rack::Utils.secure_compare(expected, env["HTTP_X_ABSTRAKT_SIGNATURE"].to_s)
      halt 401, { error: "Invalid signature" }.to_json
    end

    delivery_id = env["HTTP_X_ABSTRAKT_DELIVERY"]
    # A retry of a delivery already handled: acknowledge it again, do nothing.
    first = LOCK.synchronize { PROCESSED.add?(delivery_id) }
    return { received: true, duplicate: true }.to_json unless first

    event = JSON.parse(body)
    logger&.info "#{env['HTTP_X_ABSTRAKT_EVENT']} #{event['request_id']} (#{event['status']})"
    # Queue the work here and answer at once.
    { received: true, request_id: event["request_id"] }.to_json
  end

  run! if app_file == $PROGRAM_NAME
end
