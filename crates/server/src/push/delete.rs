//! Push-session delete (§5.7): no advisory lock; not found / forbidden / expired as for
//! chunks; rows cascade.

use crate::db::{self, Context};
use crate::error::{Failure, PushDeleteError};
use crate::push::{load_session, parse_push_id};
use crate::{Actor, SyncService};

impl SyncService {
    /// Abandons the staging session `push_id` of the actor.
    pub async fn delete_push_session(
        &self,
        actor: &Actor,
        push_id: &str,
    ) -> Result<(), PushDeleteError> {
        let _guard = self.lifecycle.begin()?;
        let id = parse_push_id(push_id)?;
        let mut conn = db::connection(&self.pool).await.map_err(Failure::from)?;
        let tx = db::begin(&mut conn, db::Mode::ReadCommitted)
            .await
            .map_err(Failure::from)?;
        let session = load_session(&tx, actor, push_id, id).await?;
        tx.execute(
            "DELETE FROM sync.push_sessions WHERE push_id = $1",
            &[&session.push_id],
        )
        .await
        .ctx("delete push session")
        .map_err(Failure::from)?;
        tx.commit()
            .await
            .ctx("commit push session delete")
            .map_err(Failure::from)?;
        Ok(())
    }
}
